"""The score histogram: image scores of the parts in view, stacked by what their labels say
(known defective red, known normal green, unlabelled grey), with the image-threshold line.

Drag the line (or click anywhere) to move the threshold; the Review panel's slider and this line
are one value. Parts at or above the line are flagged. The axis runs from 0 to ``top``: 1 for
block probabilities, more for a model whose map fuses the neighbour distance (core/learning/fusion.py:
scores and thresholds past 1), so that every score gets its own bin and any score can be the
threshold (:func:`axis_top`).
"""
from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

BINS = 40
GROUP_COLORS = {"defective": QColor(205, 60, 60), "normal": QColor(60, 160, 80),
                "unlabelled": QColor(150, 150, 150)}
LINE = QColor(20, 20, 20)


def axis_top(*values: float) -> float:
    """The top of the score axis: 1, or the largest finite value rounded up to a tenth."""
    finite = [float(v) for v in values if np.isfinite(v)]
    return max(1.0, math.ceil(max(finite, default=0.0) * 10 - 1e-9) / 10)


class ScoreHistogram(QWidget):
    thresholdChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.scores: dict[str, np.ndarray] = {}
        self.threshold = 0.5
        self.top = 1.0
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setCursor(Qt.CursorShape.SizeHorCursor)
        self._dragging = False

    def set_scores(self, groups: dict[str, list[float]]) -> None:
        self.scores = {k: np.asarray(v, np.float64) for k, v in groups.items() if len(v)}
        self.update()

    def set_top(self, top: float) -> None:
        """The axis' top (see :func:`axis_top`)."""
        self.top = float(top)
        self.set_threshold(self.threshold)

    def set_threshold(self, t: float) -> None:
        self.threshold = float(min(self.top, max(0.0, t)))
        self.update()

    def counts(self) -> np.ndarray:
        """(groups, BINS) histogram counts, in GROUP_COLORS order."""
        edges = np.linspace(0.0, self.top, BINS + 1)
        return np.stack([np.histogram(np.clip(self.scores.get(g, np.empty(0)), 0, self.top), edges)[0]
                         for g in GROUP_COLORS])

    def _plot(self) -> QRectF:
        fm = self.fontMetrics()
        return QRectF(6, 6, max(1, self.width() - 12), max(1, self.height() - fm.height() - 12))

    def line_x(self) -> float:
        r = self._plot()
        return r.left() + self.threshold / self.top * r.width()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(250, 250, 250))
        r = self._plot()
        p.setPen(QPen(QColor(200, 200, 200), 1))
        p.drawRect(r)
        counts = self.counts()
        top = max(1, int(counts.sum(0).max()) if counts.size else 1)
        bw = r.width() / BINS
        base = np.zeros(BINS)
        p.setPen(Qt.PenStyle.NoPen)
        for gi, color in enumerate(GROUP_COLORS.values()):
            p.setBrush(color)
            for b in range(BINS):
                c = counts[gi, b]
                if c:
                    h0, h1 = base[b] / top * r.height(), (base[b] + c) / top * r.height()
                    p.drawRect(QRectF(r.left() + b * bw + 0.5, r.bottom() - h1, bw - 1, h1 - h0))
            base += counts[gi]
        x = self.line_x()
        p.setPen(QPen(LINE, 2))
        p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
        p.setPen(QColor(70, 70, 70))
        fm = p.fontMetrics()
        y = r.bottom() + 4
        p.drawText(QRectF(r.left(), y, 40, fm.height()), Qt.AlignmentFlag.AlignLeft, "0")
        p.drawText(QRectF(r.right() - 40, y, 40, fm.height()), Qt.AlignmentFlag.AlignRight, f"{self.top:g}")
        label = f"threshold {self.threshold:.3f}"
        w = fm.horizontalAdvance(label)
        lx = min(max(r.left() + 20, x - w / 2), r.right() - w - 20)
        p.drawText(QRectF(lx, y, w + 4, fm.height()), Qt.AlignmentFlag.AlignLeft, label)
        if not self.scores:
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, "no scores yet: score the images with a model")

    # ---- dragging the line ------------------------------------------------------------------------
    def _value_at(self, x: float) -> float:
        r = self._plot()
        return float(min(1.0, max(0.0, (x - r.left()) / r.width())) * self.top)

    def mousePressEvent(self, e) -> None:
        if e.button() == Qt.MouseButton.LeftButton:
            self._dragging = True
            self._move_to(e.position().x())

    def mouseMoveEvent(self, e) -> None:
        if self._dragging:
            self._move_to(e.position().x())

    def mouseReleaseEvent(self, e) -> None:
        self._dragging = False

    def _move_to(self, x: float) -> None:
        t = round(self._value_at(x), 3)
        if t != self.threshold:
            self.set_threshold(t)
            self.thresholdChanged.emit(t)
