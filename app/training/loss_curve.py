"""The loss curve: a plain QWidget that paints the training losses as they arrive.

Series: the total loss, and L_x / L_u during a ResMixMatch stage (image tags), against the
step (continuous across the two training stages, whose starts are marked); the validation pixel
AP on the right axis (0..1) as dots. Values are drawn on a log scale when they span more than a
factor of 20, so the early drop does not flatten the rest. No plotting library.
"""
from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

COLORS = {"loss": QColor(70, 140, 230), "l_x": QColor(230, 140, 40), "l_u": QColor(60, 170, 90),
          "val_pixel_ap": QColor(200, 60, 160)}
NAMES = {"loss": "loss", "l_x": "L_x", "l_u": "L_u", "val_pixel_ap": "val pixel AP"}
LOSSES = ("loss", "l_x", "l_u")


class LossCurve(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.curves: dict[str, list[tuple[float, float]]] = {}
        self.stage_starts: list[tuple[float, str]] = []
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_data(self, curves: dict[str, list[tuple[float, float]]], stage_starts=()) -> None:
        self.curves = {k: list(v) for k, v in curves.items() if v}
        self.stage_starts = list(stage_starts)
        self.update()

    def shown_series(self) -> list[str]:
        return [k for k in ("loss", "l_x", "l_u", "val_pixel_ap") if self.curves.get(k)]

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.fillRect(self.rect(), QColor(250, 250, 250))
        fm = p.fontMetrics()
        plot = QRectF(44, 8, self.width() - 44 - 36, self.height() - 8 - fm.height() - 10)
        p.setPen(QPen(QColor(190, 190, 190), 1))
        p.drawRect(plot)
        losses = [(x, y) for k in LOSSES for x, y in self.curves.get(k, []) if y > 0]
        if not losses or plot.width() < 20 or plot.height() < 20:
            p.setPen(QColor(120, 120, 120))
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "the loss curve appears when training starts")
            return
        xs = [x for k in self.curves for x, _ in self.curves[k]]
        x0, x1 = min(xs), max(xs)
        x1 = x1 if x1 > x0 else x0 + 1
        lo, hi = min(y for _, y in losses), max(y for _, y in losses)
        log = hi / max(lo, 1e-12) > 20
        f = (lambda v: math.log10(max(v, 1e-12))) if log else (lambda v: v)
        y0, y1 = (f(lo), f(hi)) if hi > lo else (f(lo) - 1, f(hi) + 1)

        def pt(x, y, right=False):
            fy = y if right else (f(y) - y0) / (y1 - y0)
            return QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(), plot.bottom() - fy * plot.height())

        p.setPen(QPen(QColor(150, 150, 150), 1, Qt.PenStyle.DashLine))
        for x, name in self.stage_starts[1:]:
            q = pt(x, lo)
            p.drawLine(QPointF(q.x(), plot.top()), QPointF(q.x(), plot.bottom()))
            p.drawText(QPointF(q.x() + 3, plot.top() + fm.ascent()), name)
        for k in LOSSES:
            pts = [pt(x, y) for x, y in self.curves.get(k, []) if y > 0]
            if len(pts) >= 2:
                path = QPainterPath(pts[0])
                for q in pts[1:]:
                    path.lineTo(q)
                p.setPen(QPen(COLORS[k], 1.6))
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawPath(path)
        ap = self.curves.get("val_pixel_ap", [])
        p.setPen(QPen(COLORS["val_pixel_ap"], 1))
        p.setBrush(COLORS["val_pixel_ap"])
        for x, y in ap:
            p.drawEllipse(pt(x, min(max(y, 0.0), 1.0), right=True), 3, 3)
        # axes
        p.setPen(QColor(90, 90, 90))
        for v, label in ((y0, _fmt(lo if hi > lo else lo, log)), (y1, _fmt(hi, log))):
            y = plot.bottom() - (v - y0) / (y1 - y0) * plot.height()
            p.drawText(QRectF(0, y - fm.height() / 2, 40, fm.height()), Qt.AlignmentFlag.AlignRight, label)
        if ap:
            p.drawText(QRectF(plot.right() + 3, plot.top(), 34, fm.height()), Qt.AlignmentFlag.AlignLeft, "AP 1")
            p.drawText(QRectF(plot.right() + 3, plot.bottom() - fm.height(), 34, fm.height()),
                       Qt.AlignmentFlag.AlignLeft, "0")
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height()),
                   Qt.AlignmentFlag.AlignLeft, f"step {x0:.0f}")
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height()),
                   Qt.AlignmentFlag.AlignRight, f"{x1:.0f}")
        # legend
        lx = plot.left() + 60
        for k in self.shown_series():
            p.setPen(QPen(COLORS[k], 3))
            ly = plot.bottom() + 2 + fm.height() / 2
            p.drawLine(QPointF(lx, ly), QPointF(lx + 14, ly))
            p.setPen(QColor(60, 60, 60))
            p.drawText(QPointF(lx + 18, plot.bottom() + 2 + fm.ascent()), NAMES[k])
            lx += 26 + fm.horizontalAdvance(NAMES[k])


def _fmt(v: float, log: bool) -> str:
    return f"{v:.2g}" if log or v < 0.01 else f"{v:.3f}"
