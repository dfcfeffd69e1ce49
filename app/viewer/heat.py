"""The heatmap layer drawn over the image on the canvas.

Normalisation is one fixed range per model, from validation (``calibration.map_floor``, where
normal parts sit, to ``map_scale``): a value is shown as ``clip((value - floor) / (scale - floor),
0, 1)`` on every image, never stretched per image, so a good part looks calm. Colour comes from the chosen colormap; opacity grows with the value (a calm
region stays transparent) up to the opacity slider's value.

Two views: **smoothed** (the core's anomaly map: the block map upsampled to the
evaluation size and Gaussian-smoothed, as scored) and **blocks** (the block map itself, one flat
cell per block: what the model decided, at the model's own resolution). The pixel threshold is
drawn as the outline of the smoothed map's pixels over it, in both views.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PySide6.QtCore import QPointF
from PySide6.QtGui import QImage, QPainterPath, QPolygonF

from .maps import colorize_rgba, smoothed_map


@dataclass
class HeatLayer:
    image: QImage                    # ARGB32 at map resolution, stretched over the whole image
    smooth: bool                     # draw with smoothing (smoothed view) or as crisp cells
    contours: QPainterPath           # pixels over the pixel threshold, in image coordinates
    over_fraction: float             # share of the image over the pixel threshold
    _keep: np.ndarray = field(repr=False, default=None)


def _contour_path(over: np.ndarray, sx: float, sy: float) -> QPainterPath:
    path = QPainterPath()
    contours, _ = cv2.findContours(over.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    for c in contours:
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) < 2:
            continue
        poly = QPolygonF([QPointF((x + 0.5) * sx, (y + 0.5) * sy) for x, y in pts])
        poly.append(poly.first())
        path.addPolygon(poly)
    return path


def build_layer(block_map: np.ndarray, width: int, height: int, map_scale: float, view: str = "smoothed",
                colormap: str = "jet", opacity: float = 0.6, pixel_threshold: float | None = None,
                display: dict | None = None, map_floor: float = 0.0, image: np.ndarray | None = None,
                amap: np.ndarray | None = None) -> HeatLayer:
    """``amap``: this block map's :func:`smoothed_map` when the caller already has it (a redraw
    that only recolours)."""
    if amap is None:
        amap = smoothed_map(block_map, width, height, display, image)
    values = amap if view == "smoothed" else np.asarray(block_map, np.float32)
    bgra = colorize_rgba(values, map_scale, colormap, opacity, map_floor)
    h, w = bgra.shape[:2]
    # Non-premultiplied ARGB32 is BGRA in memory on little-endian machines.
    img = QImage(bgra.data, w, h, 4 * w, QImage.Format.Format_ARGB32)
    contours, frac = QPainterPath(), 0.0
    if pixel_threshold is not None:
        over = amap >= pixel_threshold
        frac = float(over.mean())
        if over.any():
            contours = _contour_path(over, width / amap.shape[1], height / amap.shape[0])
    return HeatLayer(img, view == "smoothed", contours, frac, bgra)


