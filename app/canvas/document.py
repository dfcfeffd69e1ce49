"""The labels of one image while it is being edited: the canvas' shape model. No Qt here.

The mask is a ``uint8`` array at the image's own resolution (1 = defect) that the canvas shows
through a QImage wrapping the same memory, so a brush dab changes a few hundred bytes and the
overlay needs no conversion. Only undo commands change the document through the ``set_*``
methods; those notify listeners (the canvas repaints, the labelling controller saves). The brush
paints live with :meth:`paint_segment` for speed and then hands a patch to an undo command.
"""
from __future__ import annotations

from typing import Callable, Iterable

import cv2
import numpy as np

from core.data.geometry import BlockGrid
from core.data.labels import BlockCells, ImageLabel, RotatedBox

Rect = tuple[int, int, int, int]            # x0, y0, x1, y1 (exclusive), image px
Listener = Callable[[str, "Rect | None"], None]


def union_rect(a: Rect | None, b: Rect | None) -> Rect | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


class LabelDocument:
    def __init__(self, image_id: int, width: int, height: int, image_size: int, block: int):
        self.image_id = image_id
        self.width, self.height = int(width), int(height)
        self.mask = np.zeros((self.height, self.width), np.uint8)
        self.boxes: list[RotatedBox] = []
        self.cells: frozenset[tuple[int, int]] = frozenset()
        self.tag: str | None = None
        self.rev = -1                       # store revision this document matches
        self.set_grid(image_size, block)
        self._listeners: list[Listener] = []

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_record(cls, image_id: int, width: int, height: int, image_size: int, block: int,
                    tag: str | None, boxes: Iterable[RotatedBox], blocks: BlockCells | None,
                    mask: np.ndarray | None, rev: int) -> "LabelDocument":
        doc = cls(image_id, width, height, image_size, block)
        doc.tag, doc.boxes, doc.rev = tag, list(boxes), rev
        if blocks is not None and blocks.cells:
            # Cells keep the grid they were drawn on, even if the project setting changed since.
            doc.set_grid(blocks.image_size, blocks.block)
            doc.cells = frozenset((int(r), int(c)) for r, c in blocks.cells)
        if mask is not None:
            if mask.shape != doc.mask.shape:
                raise ValueError(f"stored mask is {mask.shape[1]}x{mask.shape[0]}, image is {width}x{height}")
            doc.mask[:] = mask > 0
        return doc

    def set_grid(self, image_size: int, block: int) -> None:
        self.image_size, self.block = int(image_size), int(block)
        self.grid = BlockGrid.for_image(self.width, self.height, self.image_size, self.block)

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _notify(self, kind: str, rect: Rect | None = None) -> None:
        for fn in list(self._listeners):
            fn(kind, rect)

    # ---- state for commands ----------------------------------------------------------------------
    def set_boxes(self, boxes: Iterable[RotatedBox]) -> None:
        self.boxes = list(boxes)
        self._notify("boxes")

    def set_cells(self, cells: Iterable[tuple[int, int]]) -> None:
        self.cells = frozenset(cells)
        self._notify("blocks")

    def set_tag(self, tag: str | None) -> None:
        self.tag = tag
        self._notify("tag")

    def patch(self, rect: Rect) -> np.ndarray:
        x0, y0, x1, y1 = rect
        return self.mask[y0:y1, x0:x1].copy()

    def set_patch(self, rect: Rect, values: np.ndarray) -> None:
        x0, y0, x1, y1 = rect
        self.mask[y0:y1, x0:x1] = values
        self._notify("mask", rect)

    # ---- live mask painting (no notification: the tool pushes a command at the end) --------------
    def clip(self, x0: float, y0: float, x1: float, y1: float) -> Rect | None:
        r = (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))),
             min(self.width, int(np.ceil(x1))), min(self.height, int(np.ceil(y1))))
        return r if r[0] < r[2] and r[1] < r[3] else None

    def paint_segment(self, p0: tuple[float, float], p1: tuple[float, float], radius: int,
                      value: int) -> Rect | None:
        """A round brush of ``radius`` px dragged from p0 to p1 (image coordinates)."""
        a = (int(np.floor(p0[0])), int(np.floor(p0[1])))
        b = (int(np.floor(p1[0])), int(np.floor(p1[1])))
        r = max(1, int(radius))
        rect = self.clip(min(a[0], b[0]) - r, min(a[1], b[1]) - r, max(a[0], b[0]) + r + 1,
                         max(a[1], b[1]) + r + 1)
        if rect is None:
            return None
        x0, y0, x1, y1 = rect
        view = self.mask[y0:y1, x0:x1]      # draw on the sub-array only: cost ~ brush area
        # OpenCV draws thick lines with round ends, i.e. a dragged disc. Thickness 2r-1 covers the
        # pixels within r of the centre pixel (r >= 2) and a single pixel for r = 1, the smallest
        # brush for specks. See brush_outline_radius for the matching preview.
        cv2.line(view, (a[0] - x0, a[1] - y0), (b[0] - x0, b[1] - y0), int(value), 2 * r - 1, cv2.LINE_8)
        return rect

    @staticmethod
    def brush_outline_radius(radius: int) -> float:
        """Radius (image px, from the centre pixel's centre) of the area a dab covers."""
        return 0.5 if radius <= 1 else radius + 0.5

    def polygon_rect(self, points: list[tuple[float, float]]) -> Rect | None:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return self.clip(min(xs) - 1, min(ys) - 1, max(xs) + 2, max(ys) + 2)

    def fill_polygon(self, points: list[tuple[float, float]], value: int) -> Rect | None:
        """Fill a closed polygon (image coordinates; pixel centres inside are filled)."""
        if len(points) < 3:
            return None
        rect = self.polygon_rect(points)
        if rect is None:
            return None
        x0, y0, x1, y1 = rect
        # Pixel (i, j) covers [i, i+1]: shift by half a pixel so OpenCV's integer grid (pixel
        # centres) matches, with 4 bits of sub-pixel precision.
        pts = np.round((np.asarray(points, np.float64) - (x0 + 0.5, y0 + 0.5)) * 16).astype(np.int32)
        view = self.mask[y0:y1, x0:x1]
        cv2.fillPoly(view, [pts], int(value), cv2.LINE_8, shift=4)
        return rect

    # ---- export --------------------------------------------------------------------------------
    def block_cells(self) -> BlockCells | None:
        if not self.cells:
            return None
        return BlockCells(self.image_size, self.block, sorted(self.cells))

    def to_image_label(self, image_path) -> ImageLabel:
        return ImageLabel(image=image_path, width=self.width, height=self.height, tag=self.tag,
                          boxes=list(self.boxes), mask=self.mask.astype(bool) if self.mask.any() else None,
                          blocks=self.block_cells())
