"""Polygon fill: click points, close on the first point (or double-click / Enter) to fill the
mask inside. Backspace removes the last point, Escape drops the polygon."""
from __future__ import annotations

import math

from PySide6.QtCore import QPointF
from PySide6.QtGui import QBrush, QColor, QPainter, QPen, QPolygonF

from ..commands import MaskPatchCommand
from .base import Tool, ToolEvent

CLOSE_DISTANCE_PX = 8    # widget px: a click this close to the first point closes the polygon


class PolygonTool(Tool):
    name = "polygon"

    def __init__(self, canvas):
        super().__init__(canvas)
        self.points: list[tuple[float, float]] = []
        self._hover: tuple[float, float] | None = None

    def busy(self) -> bool:
        return bool(self.points)

    def _near_first(self, ev: ToolEvent) -> bool:
        if len(self.points) < 3:
            return False
        fx, fy = self.canvas.view.to_widget(*self.points[0])
        return math.hypot(ev.wx - fx, ev.wy - fy) <= CLOSE_DISTANCE_PX

    def press(self, ev: ToolEvent) -> None:
        if self.doc is None:
            return
        if self._near_first(ev):
            self.finish()
            return
        self.points.append((ev.x, ev.y))
        self.canvas.update()

    def double_click(self, ev: ToolEvent) -> None:
        # The press of the double-click already added a point at the same place: drop it.
        if len(self.points) >= 2 and self.points[-1] == self.points[-2]:
            self.points.pop()
        self.finish()

    def hover(self, ev: ToolEvent) -> None:
        self._hover = (ev.x, ev.y)
        if self.points:
            self.canvas.update()

    move = hover

    def finish(self) -> bool:
        if len(self.points) < 3 or self.doc is None:
            return False
        pts, self.points = self.points, []
        rect = self.doc.polygon_rect(pts)
        if rect is not None:
            before = self.doc.patch(rect)
            self.doc.fill_polygon(pts, 1)
            after = self.doc.patch(rect)
            if (before != after).any():
                self.canvas.push(MaskPatchCommand(self.doc, rect, before, after, "Polygon fill"))
        self.canvas.update()
        return True

    def delete(self) -> bool:
        if not self.points:
            return False
        self.points.pop()
        self.canvas.update()
        return True

    def cancel(self) -> bool:
        if not self.points:
            return False
        self.points = []
        self.canvas.update()
        return True

    def paint(self, painter: QPainter) -> None:
        if not self.points:
            return
        view = self.canvas.view
        pts = [QPointF(*view.to_widget(x, y)) for x, y in self.points]
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(QColor(255, 80, 80), 1.5))
        painter.setBrush(QBrush(QColor(255, 80, 80, 50)))
        poly = QPolygonF(pts + ([QPointF(*view.to_widget(*self._hover))] if self._hover else []))
        painter.drawPolygon(poly)
        painter.setBrush(QColor(255, 255, 255))
        for i, p in enumerate(pts):
            painter.drawEllipse(p, 5 if i == 0 else 3, 5 if i == 0 else 3)
