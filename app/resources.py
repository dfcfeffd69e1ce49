"""Access to ../resources (icons, style sheet). The app runs without them if they are missing."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "resources"


def style_sheet() -> str:
    p = ROOT / "style.qss"
    return p.read_text(encoding="utf-8") if p.is_file() else ""


def icon(name: str):
    from PySide6.QtGui import QIcon
    p = ROOT / "icons" / f"{name}.svg"
    return QIcon(str(p)) if p.is_file() else None
