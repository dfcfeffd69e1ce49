"""Image and mask layers as QImages, built off the GUI thread.

- The image becomes a small pyramid of RGB32 QImages (full size, 1/2, 1/4, ... down to about
  1000 px) so a zoomed-out 4000 x 4000 image is drawn smoothly from a level near screen size.
- The mask overlay is an Indexed8 QImage that *wraps the document's mask array* (0 = clear,
  1 = defect) with a two-colour table: a brush dab writes to the array and the overlay shows it
  with no conversion; the canvas repaints only the dab's rectangle.
QImage (unlike QPixmap) may be created in any thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtGui import QImage, qRgba

from core.data.images import read_image

MASK_RGBA = (255, 40, 40, 120)
LEVEL_MIN_SIDE = 1000


@dataclass
class LoadedImage:
    image_id: int
    path: Path
    width: int
    height: int
    levels: list[tuple[int, QImage]] = field(default_factory=list)   # (downscale factor, image)
    _arrays: list[np.ndarray] = field(default_factory=list, repr=False)  # keep QImage memory alive
    mask: np.ndarray | None = None          # decoded stored mask (uint8), if any
    _grey: np.ndarray | None = field(default=None, repr=False)

    def grey(self) -> np.ndarray:
        """The image at full size as uint8 grey levels: what the heatmap's pixel-contrast
        refinement reads (core.eval.anomaly_map.grey_levels, the same weights). Converted once
        per loaded image, not on every redraw (opacity, colour map, view)."""
        if self._grey is None:
            self._grey = cv2.cvtColor(self._arrays[0], cv2.COLOR_BGRA2GRAY)
        return self._grey

    def level_for(self, scale: float) -> tuple[int, QImage]:
        """The coarsest level still at least as detailed as the screen at ``scale``."""
        best = self.levels[0]
        for f, img in self.levels:
            if scale * f <= 1.0:
                best = (f, img)
        return best


def _rgb32(rgb: np.ndarray) -> tuple[np.ndarray, QImage]:
    bgra = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    h, w = bgra.shape[:2]
    return bgra, QImage(bgra.data, w, h, 4 * w, QImage.Format.Format_RGB32)


def load_image(image_id: int, path: Path) -> LoadedImage:
    """Decode the image (core.data.images: 16-bit, RGBA, grayscale, non-ASCII paths) into levels."""
    rgb = read_image(path)
    h, w = rgb.shape[:2]
    out = LoadedImage(image_id, Path(path), w, h)
    arr, img = _rgb32(rgb)
    out._arrays.append(arr)
    out.levels.append((1, img))
    f, level = 1, rgb
    while max(level.shape[:2]) > 2 * LEVEL_MIN_SIDE:
        f *= 2
        level = cv2.resize(level, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        arr, img = _rgb32(level)
        out._arrays.append(arr)
        out.levels.append((f, img))
    return out


def mask_overlay(mask: np.ndarray) -> QImage:
    """An Indexed8 view of ``mask`` (must stay alive and C-contiguous while shown)."""
    assert mask.dtype == np.uint8 and mask.flags.c_contiguous
    h, w = mask.shape
    img = QImage(mask.data, w, h, w, QImage.Format.Format_Indexed8)
    img.setColorTable([qRgba(0, 0, 0, 0), qRgba(*MASK_RGBA)] + [qRgba(*MASK_RGBA)] * 254)
    return img
