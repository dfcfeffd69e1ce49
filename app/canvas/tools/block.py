"""Block tool: click or drag to toggle cells of the model's block grid (core.data.geometry.BlockGrid,
the same grid training uses). A drag paints the state the first toggled cell got, so sweeping
over a defect marks it without flickering cells already marked. One drag = one undo command."""
from __future__ import annotations

import math

from PySide6.QtCore import Qt

from ..commands import cells_command
from .base import Tool, ToolEvent


class BlockTool(Tool):
    name = "block"
    cursor = Qt.CursorShape.PointingHandCursor

    def __init__(self, canvas):
        super().__init__(canvas)
        self.preview: set[tuple[int, int]] | None = None   # cells while dragging
        self._target = True
        self._last: tuple[float, float] | None = None

    def busy(self) -> bool:
        return self.preview is not None

    def cells(self) -> frozenset[tuple[int, int]]:
        """What the canvas should show: the drag preview, or the document's cells."""
        if self.preview is not None:
            return frozenset(self.preview)
        return self.doc.cells if self.doc is not None else frozenset()

    def press(self, ev: ToolEvent) -> None:
        if self.doc is None:
            return
        cell = self.doc.grid.block_at(ev.x, ev.y)
        if cell is None:
            return
        self.preview = set(self.doc.cells)
        self._target = cell not in self.preview
        self._last = (ev.x, ev.y)
        self._paint_to(ev.x, ev.y)

    def move(self, ev: ToolEvent) -> None:
        if self.preview is not None:
            self._paint_to(ev.x, ev.y)

    def _paint_to(self, x: float, y: float) -> None:
        grid = self.doc.grid
        x0, y0 = self._last
        # Sample the segment finely enough that a fast drag skips no cell on its way.
        step = max(0.5, min(grid.block_w, grid.block_h) / 3)
        n = max(1, int(math.ceil(math.hypot(x - x0, y - y0) / step)))
        for i in range(n + 1):
            cell = grid.block_at(x0 + (x - x0) * i / n, y0 + (y - y0) * i / n)
            if cell is None:
                continue
            if self._target:
                self.preview.add(cell)
            else:
                self.preview.discard(cell)
        self._last = (x, y)
        self.canvas.update()

    def release(self, ev: ToolEvent) -> None:
        if self.preview is None:
            return
        cells, self.preview = frozenset(self.preview), None
        if cells != self.doc.cells:
            n = abs(len(cells) - len(self.doc.cells)) or 1
            verb = "Mark" if self._target else "Clear"
            self.canvas.push(cells_command(self.doc, cells, f"{verb} {n} block{'s' if n > 1 else ''}"))
        self.canvas.update()

    def cancel(self) -> bool:
        if self.preview is None:
            return False
        self.preview = None
        self.canvas.update()
        return True
