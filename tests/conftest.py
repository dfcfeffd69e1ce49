"""Shared test setup: Qt offscreen, isolated user settings, the optional real dataset."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not SHARED_DATA.is_dir():  # worktrees live one level deeper than a plain clone
    SHARED_DATA = Path("/work/shared/data")
PIPED = SHARED_DATA / "piped" / "PA_BDP01_TL"


@pytest.fixture(autouse=True)
def _isolated_user_settings(tmp_path, monkeypatch):
    """Never read or write the real user's QSettings (recent projects, brush size)."""
    monkeypatch.setenv("SEMIREST_STUDIO_SETTINGS", str(tmp_path / "user-settings.ini"))


@pytest.fixture
def piped_category():
    if not (PIPED / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED} (../shared/data is absent on this machine)")
    return PIPED
