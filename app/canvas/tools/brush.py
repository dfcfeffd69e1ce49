"""Brush and eraser: a round brush at the image's own resolution, with a size preview.

Painting is live (the mask array under the overlay QImage is changed in place and only the dirty
rectangle is repainted); on release the touched patch becomes one undo command, which is what
saves it. A kill mid-stroke loses that stroke only.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPen

from ..commands import MaskPatchCommand
from ..document import LabelDocument, union_rect
from .base import Tool, ToolEvent


class BrushTool(Tool):
    cursor = Qt.CursorShape.BlankCursor      # the circle is the cursor

    def __init__(self, canvas, erase: bool):
        super().__init__(canvas, "eraser" if erase else "brush")
        self.erase = erase
        self._before: np.ndarray | None = None
        self._rect = None
        self._last: tuple[float, float] | None = None
        self._hover: tuple[float, float] | None = None

    @property
    def value(self) -> int:
        return 0 if self.erase else 1

    def busy(self) -> bool:
        return self._before is not None

    def _dab(self, p0, p1) -> None:
        rect = self.doc.paint_segment(p0, p1, self.canvas.brush_radius, self.value)
        if rect is not None:
            self._rect = union_rect(self._rect, rect)
            self.canvas.update_image_rect(rect)

    def press(self, ev: ToolEvent) -> None:
        if self.doc is None:
            return
        # A copy of the mask before the stroke: the exact undo patch for any stroke shape.
        self._before = self.doc.mask.copy()
        self._rect, self._last = None, (ev.x, ev.y)
        self._dab(self._last, self._last)

    def move(self, ev: ToolEvent) -> None:
        self._update_hover(ev)
        if self._before is None:
            return
        self._dab(self._last, (ev.x, ev.y))
        self._last = (ev.x, ev.y)

    def release(self, ev: ToolEvent) -> None:
        if self._before is None:
            return
        before, rect = self._before, self._rect
        self._before, self._rect, self._last = None, None, None
        if rect is None:
            return
        x0, y0, x1, y1 = rect
        old = before[y0:y1, x0:x1].copy()
        new = self.doc.patch(rect)
        if np.array_equal(old, new):
            return
        self.canvas.push(MaskPatchCommand(self.doc, rect, old, new, "Erase" if self.erase else "Brush stroke"))

    def hover(self, ev: ToolEvent) -> None:
        self._update_hover(ev)

    def _update_hover(self, ev: ToolEvent) -> None:
        old, self._hover = self._hover, (ev.x, ev.y)
        for p in (old, self._hover):
            if p is not None:
                self.canvas.update_around(p, self.outline_radius() + 2)

    def outline_radius(self) -> float:
        return LabelDocument.brush_outline_radius(self.canvas.brush_radius)

    def cancel(self) -> bool:
        if self._before is None:
            return False
        rect = self._rect
        if rect is not None:   # put the pixels back: the stroke never happened
            x0, y0, x1, y1 = rect
            self.doc.mask[y0:y1, x0:x1] = self._before[y0:y1, x0:x1]
            self.canvas.update_image_rect(rect)
        self._before, self._rect, self._last = None, None, None
        return True

    def leave(self) -> None:
        if self._hover is not None:
            self.canvas.update_around(self._hover, self.outline_radius() + 2)
        self._hover = None

    def paint(self, painter: QPainter) -> None:
        if self._hover is None or self.doc is None:
            return
        px, py = int(np.floor(self._hover[0])) + 0.5, int(np.floor(self._hover[1])) + 0.5
        cx, cy = self.canvas.view.to_widget(px, py)
        r = max(2.0, self.outline_radius() * self.canvas.view.scale)
        color = QColor(255, 255, 255) if self.erase else QColor(255, 80, 80)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 160), 3))
        painter.drawEllipse(QPointF(cx, cy), r, r)
        pen = QPen(color, 1.5)
        if self.erase:
            pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.drawEllipse(QPointF(cx, cy), r, r)
