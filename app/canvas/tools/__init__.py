"""One module per canvas tool. ``make_tools(canvas)`` builds them all, keyed by tool name."""
from __future__ import annotations

from .base import TOOL_KINDS, PanOnlyTool, Tool, ToolEvent
from .block import BlockTool
from .box import BoxTool
from .brush import BrushTool
from .polygon import PolygonTool

TOOL_NAMES = tuple(TOOL_KINDS)


def make_tools(canvas) -> dict[str, Tool]:
    return {"brush": BrushTool(canvas, erase=False), "eraser": BrushTool(canvas, erase=True),
            "polygon": PolygonTool(canvas), "block": BlockTool(canvas), "box": BoxTool(canvas),
            "tag": PanOnlyTool(canvas, "tag")}


__all__ = ["TOOL_KINDS", "TOOL_NAMES", "Tool", "ToolEvent", "make_tools"]
