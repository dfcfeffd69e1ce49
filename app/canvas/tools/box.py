"""Rotated-box tool: drag on empty image to draw (axis-aligned while drawing), drag inside the
selected box to move it, drag one of its 8 square handles to resize (the opposite side stays),
drag the round handle above it to rotate (Shift snaps to 15 degrees), Delete removes it.

The drag changes only a live copy; the release pushes one undo command (which saves)."""
from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen

from core.data.labels import RotatedBox

from ...shortcuts import SNAP_DEGREES, SNAP_MODIFIER
from .. import box_geometry as bg
from ..commands import boxes_command
from .base import Tool, ToolEvent

HANDLE_PX = 7            # widget px: half-size of a square handle's hit area
ROTATE_HANDLE_PX = 28    # widget px: distance of the rotation handle above the box
MIN_DRAG_PX = 4          # widget px: a shorter drag is a click (selects or deselects)


class BoxTool(Tool):
    name = "box"

    def __init__(self, canvas):
        super().__init__(canvas)
        self.selected: int | None = None
        self.live: RotatedBox | None = None     # the box being drawn / moved / resized / rotated
        self._mode: str | None = None           # draw | move | resize | rotate
        self._start: tuple[float, float, float, float] | None = None   # x, y, wx, wy at press
        self._orig: RotatedBox | None = None
        self._handle: tuple[int, int] | None = None

    # ---- what the canvas draws ------------------------------------------------------------------
    def display_boxes(self) -> list[tuple[RotatedBox, bool]]:
        if self.doc is None:
            return []
        self._check_selection()
        out = []
        for i, b in enumerate(self.doc.boxes):
            if i == self.selected and self.live is not None and self._mode != "draw":
                b = self.live
            out.append((b, i == self.selected))
        if self._mode == "draw" and self.live is not None:
            out.append((self.live, True))
        return out

    def _check_selection(self) -> None:
        if self.selected is not None and (self.doc is None or self.selected >= len(self.doc.boxes)):
            self.selected = None

    def select(self, index: int | None) -> None:
        self.selected = index
        self.canvas.update()

    def rotation_handle_offset(self) -> float:
        return ROTATE_HANDLE_PX / self.canvas.view.scale

    # ---- hit tests ------------------------------------------------------------------------------
    def _hit_handle(self, ev: ToolEvent):
        self._check_selection()
        if self.selected is None:
            return None
        box = self.doc.boxes[self.selected]
        view = self.canvas.view
        rx, ry = view.to_widget(*bg.rotation_handle(box, self.rotation_handle_offset()))
        if math.hypot(ev.wx - rx, ev.wy - ry) <= HANDLE_PX + 2:
            return "rotate", None
        for handle, (hx, hy) in bg.handle_points(box):
            wx, wy = view.to_widget(hx, hy)
            if abs(ev.wx - wx) <= HANDLE_PX and abs(ev.wy - wy) <= HANDLE_PX:
                return "resize", handle
        return None

    def _hit_box(self, ev: ToolEvent) -> int | None:
        margin = 2 / self.canvas.view.scale
        if self.selected is not None and bg.contains(self.doc.boxes[self.selected], ev.x, ev.y, margin):
            return self.selected      # the selected box wins where boxes overlap
        for i in range(len(self.doc.boxes) - 1, -1, -1):
            if bg.contains(self.doc.boxes[i], ev.x, ev.y, margin):
                return i
        return None

    # ---- events ---------------------------------------------------------------------------------
    def press(self, ev: ToolEvent) -> None:
        if self.doc is None:
            return
        self._start = (ev.x, ev.y, ev.wx, ev.wy)
        hit = self._hit_handle(ev)
        if hit is not None:
            self._mode, self._handle = hit
            self._orig = self.live = self.doc.boxes[self.selected]
        elif (i := self._hit_box(ev)) is not None:
            self.selected, self._mode = i, "move"
            self._orig = self.live = self.doc.boxes[i]
        else:
            self.selected, self._mode, self._orig = None, "draw", None
            self.live = None
        self.canvas.update()

    def move(self, ev: ToolEvent) -> None:
        if self._mode is None:
            self.hover(ev)
            return
        x0, y0, wx0, wy0 = self._start
        if self._mode == "draw":
            if max(abs(ev.wx - wx0), abs(ev.wy - wy0)) < MIN_DRAG_PX:
                self.live = None
            else:
                x0c, y0c = self._clamp(x0, y0)
                x1c, y1c = self._clamp(ev.x, ev.y)
                self.live = bg.from_drag(x0c, y0c, x1c, y1c)
        elif self._mode == "move":
            self.live = self._inside(bg.moved(self._orig, ev.x - x0, ev.y - y0))
        elif self._mode == "resize":
            self.live = self._inside(bg.resized(self._orig, self._handle, ev.x, ev.y))
        elif self._mode == "rotate":
            snap = SNAP_DEGREES if ev.modifiers & SNAP_MODIFIER else None
            self.live = bg.rotated(self._orig, ev.x, ev.y, snap)
        self.canvas.update()

    def release(self, ev: ToolEvent) -> None:
        if self._mode is None:
            return
        self.move(ev)
        mode, live, orig = self._mode, self.live, self._orig
        self._mode, self.live, self._orig, self._start = None, None, None, None
        boxes = list(self.doc.boxes)
        if mode == "draw":
            if live is not None:
                boxes.append(live)
                self.selected = len(boxes) - 1
                self.canvas.push(boxes_command(self.doc, boxes, "Draw box"))
        elif live is not None and live != orig:
            boxes[self.selected] = live
            text = {"move": "Move box", "resize": "Resize box", "rotate": "Rotate box"}[mode]
            self.canvas.push(boxes_command(self.doc, boxes, text))
        self.canvas.update()

    def hover(self, ev: ToolEvent) -> None:
        if self.doc is None:
            return
        hit = self._hit_handle(ev)
        if hit is not None:
            shape = Qt.CursorShape.PointingHandCursor if hit[0] == "rotate" else Qt.CursorShape.SizeAllCursor
        elif self._hit_box(ev) is not None:
            shape = Qt.CursorShape.SizeAllCursor
        else:
            shape = self.cursor
        self.canvas.setCursor(shape)

    def busy(self) -> bool:
        return self._mode is not None

    def cancel(self) -> bool:
        if self._mode is not None:
            self._mode, self.live, self._orig = None, None, None
        elif self.selected is not None:
            self.selected = None
        else:
            return False
        self.canvas.update()
        return True

    def delete(self) -> bool:
        self._check_selection()
        if self.selected is None or self._mode is not None:
            return False
        boxes = list(self.doc.boxes)
        del boxes[self.selected]
        self.selected = None
        self.canvas.push(boxes_command(self.doc, boxes, "Delete box"))
        return True

    def deactivate(self) -> None:
        self.cancel()
        self.selected = None

    # ---- helpers --------------------------------------------------------------------------------
    def _clamp(self, x: float, y: float) -> tuple[float, float]:
        return min(max(x, 0.0), self.doc.width), min(max(y, 0.0), self.doc.height)

    def _inside(self, box: RotatedBox) -> RotatedBox:
        """Keep the centre on the image, so a box can never be lost wholly outside it."""
        cx, cy = self._clamp(box.cx, box.cy)
        return RotatedBox(cx, cy, box.w, box.h, box.angle)

    def paint(self, painter: QPainter) -> None:
        """Handles of the selected box (the boxes themselves are drawn by the canvas)."""
        self._check_selection()
        if self.doc is None or self.selected is None or self._mode == "draw":
            return
        box = self.live if self.live is not None else self.doc.boxes[self.selected]
        view = self.canvas.view
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        top = QPointF(*view.to_widget(*bg.from_local(box, 0, -box.h / 2)))
        rot = QPointF(*view.to_widget(*bg.rotation_handle(box, self.rotation_handle_offset())))
        painter.setPen(QPen(QColor(255, 255, 255), 1.2))
        painter.drawLine(top, rot)
        painter.setBrush(QColor(255, 200, 0))
        painter.setPen(QPen(QColor(0, 0, 0), 1))
        painter.drawEllipse(rot, HANDLE_PX - 1, HANDLE_PX - 1)
        painter.setBrush(QColor(255, 255, 255))
        s = HANDLE_PX - 2
        for _, (hx, hy) in bg.handle_points(box):
            wx, wy = view.to_widget(hx, hy)
            painter.drawRect(QRectF(wx - s, wy - s, 2 * s, 2 * s))
        if self._mode == "rotate":
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(rot + QPointF(HANDLE_PX + 4, 4), f"{box.angle:.1f}°")
