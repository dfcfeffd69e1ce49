from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:      # run from anywhere without an installed package
    sys.path.insert(0, str(ROOT))
