"""What every canvas tool looks like. A tool turns mouse events (in image coordinates) into undo
commands, and draws its own transient feedback (brush circle, rubber band, handles)."""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter

# Each tool -> the label kind it produces (the kinds of core.data.labels); the one list of tool names.
TOOL_KINDS = {"brush": "mask", "eraser": "mask", "polygon": "mask", "block": "blocks",
              "box": "boxes", "tag": "tag"}


@dataclass(frozen=True)
class ToolEvent:
    x: float                      # image px (float; pixel (i, j) covers [i, i+1] x [j, j+1])
    y: float
    wx: float                     # widget px
    wy: float
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier


class Tool:
    name = ""
    cursor = Qt.CursorShape.CrossCursor
    pans_with_left_button = False

    def __init__(self, canvas, name: str | None = None):
        self.canvas = canvas
        if name:
            self.name = name

    @property
    def kind(self) -> str:
        return TOOL_KINDS[self.name]

    @property
    def doc(self):
        return self.canvas.document

    def press(self, ev: ToolEvent) -> None: ...
    def move(self, ev: ToolEvent) -> None: ...
    def release(self, ev: ToolEvent) -> None: ...
    def hover(self, ev: ToolEvent) -> None: ...
    def double_click(self, ev: ToolEvent) -> None: ...
    def paint(self, painter: QPainter) -> None: ...

    def busy(self) -> bool:
        """True while an edit is half done (a stroke, a drag, an open polygon)."""
        return False

    def cancel(self) -> bool:
        """Escape: drop the edit in progress. True if there was something to drop."""
        return False

    def delete(self) -> bool:
        return False

    def finish(self) -> bool:
        return False

    def deactivate(self) -> None:
        self.cancel()


class PanOnlyTool(Tool):
    """The tag tool: tags come from keys and buttons; the left button pans the image."""

    cursor = Qt.CursorShape.OpenHandCursor
    pans_with_left_button = True
