"""Where the image sits on the canvas: widget = image * scale + offset. No Qt."""
from __future__ import annotations

from dataclasses import dataclass

MIN_SCALE, MAX_SCALE = 0.01, 64.0


@dataclass
class ViewTransform:
    scale: float = 1.0
    ox: float = 0.0
    oy: float = 0.0

    def to_widget(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale + self.ox, y * self.scale + self.oy

    def to_image(self, wx: float, wy: float) -> tuple[float, float]:
        return (wx - self.ox) / self.scale, (wy - self.oy) / self.scale

    def zoom_at(self, wx: float, wy: float, factor: float) -> None:
        """Zoom by ``factor`` keeping the image point under widget point (wx, wy) in place."""
        ix, iy = self.to_image(wx, wy)
        self.scale = min(MAX_SCALE, max(MIN_SCALE, self.scale * factor))
        self.ox, self.oy = wx - ix * self.scale, wy - iy * self.scale

    def pan(self, dx: float, dy: float) -> None:
        self.ox += dx
        self.oy += dy

    def fit(self, width: int, height: int, widget_w: int, widget_h: int, margin: int = 8) -> None:
        avail_w, avail_h = max(1, widget_w - 2 * margin), max(1, widget_h - 2 * margin)
        self.scale = min(MAX_SCALE, max(MIN_SCALE, min(avail_w / width, avail_h / height)))
        self.ox = (widget_w - width * self.scale) / 2
        self.oy = (widget_h - height * self.scale) / 2
