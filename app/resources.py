"""Access to the shipped resources (icons, style sheet, demo images). The app runs without the
icons and style if they are missing; the demo says so.

In a source checkout (or an editable install) they are the repository's top-level ``resources/``
folder; a regular install carries the same folder as the package ``semirest_studio_resources``
(pyproject.toml), never anything written at run time.
"""
from __future__ import annotations

from pathlib import Path


def _root() -> Path:
    here = Path(__file__).resolve().parents[1] / "resources"
    if here.is_dir():
        return here
    from importlib.util import find_spec
    spec = find_spec("semirest_studio_resources")     # a namespace package: no __init__.py in resources/
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return here


ROOT = _root()


def path(*parts: str) -> Path:
    return ROOT.joinpath(*parts)


def style_sheet() -> str:
    p = ROOT / "style.qss"
    return p.read_text(encoding="utf-8") if p.is_file() else ""


def icon(name: str):
    from PySide6.QtGui import QIcon
    p = ROOT / "icons" / f"{name}.svg"
    return QIcon(str(p)) if p.is_file() else None


def label_costs() -> dict | None:
    """What each kind of label bought on the benchmark (written by ``python -m bench`` to
    resources/label_costs.json), or None when the file is missing or unreadable: the Train
    panel then says nothing rather than something made up."""
    import json
    p = ROOT / "label_costs.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return data if isinstance(data.get("pixel_ap"), dict) else None
    except (OSError, ValueError, AttributeError):
        return None
