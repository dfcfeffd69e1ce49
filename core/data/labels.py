"""Label kinds, their per-image JSON format, and block labels (paper Eq. 14 and 15).

Four kinds of label, from most to least informative (and from most to least expensive to draw):

- **mask**: a pixel mask, True = defect. Block labels by Eq. 14 (anomalous above eps+, normal below
  eps-, ignored in between): the *supervised* setting.
- **blocks**: cells toggled on a block grid (the canvas' block tool). Painted back to pixels and
  handled like a mask, so a grid that differs from the model's still gives correct labels.
- **boxes**: rotated rectangles around defects. Blocks with more than v of their area inside the
  union of boxes are *unknown*, the rest *normal* (Eq. 15): the *semi-supervised* setting.
- **tag**: ``"defective"`` makes every block unknown, ``"normal"`` every block normal (WeakREST).

When an image carries several kinds, the most informative one is used for training.

Box convention: centre (cx, cy), size (w, h) in original-image pixels, ``angle`` in degrees in
[-180, 180], the direction of the width axis measured clockwise on screen from the x axis (image y
points down). This is OpenCV's ``RotatedRect`` convention, so ``cv2.boxPoints`` agrees with
:meth:`RotatedBox.corners`.

Per-image JSON (``<image stem>.json``; written by the app, read by ``semirest train``)::

    {
      "format": "semirest.labels/1",
      "image": "000.png",              # relative to the JSON file's folder, or absolute
      "width": 128, "height": 128,     # image size in px (checked against the file)
      "tag": "defective",              # "normal" | "defective" | null
      "boxes": [{"cx": 40.5, "cy": 60, "w": 20, "h": 6, "angle": 30}],
      "mask": "000_mask.png",          # PNG beside the JSON, 255 = defect; or null
      "blocks": {"image_size": 256, "block": 8, "cells": [[3, 4], [3, 5]]},   # or null
      "seconds": {"boxes": 4.8},       # active annotation seconds per label kind
      "seconds_estimated": {"boxes": 4.8}   # the part of "seconds" that was estimated (seeded,
    }                                  # imported, core/data/labelcost.py), not measured; optional

"seconds" stays the total per kind, so readers that know only "seconds" read what they always did;
"seconds_estimated" (absent: all measured) is written only when some seconds were estimated.

Every field is checked on reading (core/data/labelcheck.py, the same rules ImageLabel.validate and the
app's store apply): width/height positive integers (or both null), numbers unquoted and finite,
blocks.image_size a multiple of 64, blocks.block 1..64, cells [row, col] inside the grid, seconds
keyed by a label kind or "checked"; a violation is a LabelError naming the file and the field.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon, box as shapely_box
from shapely.ops import unary_union

from ..errors import LabelError
from ..fileio import atomic_write_text
from . import labelcheck
from .geometry import BlockGrid
from .images import read_mask, write_mask

FORMAT = "semirest.labels/1"

# Block label codes (int8 maps of shape (rows, cols)).
BLOCK_NORMAL = 0
BLOCK_ANOMALOUS = 1
BLOCK_UNKNOWN = -1   # inside boxes / tagged defective: ResMixMatch guesses these
BLOCK_IGNORE = -2    # Eq. 14's empty set: between eps- and eps+, no loss

LABEL_KINDS = labelcheck.LABEL_KINDS   # ("mask", "blocks", "boxes", "tag")
TAGS = labelcheck.TAGS                 # ("normal", "defective")


# --------------------------------------------------------------------------------------------
# Rotated boxes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RotatedBox:
    cx: float
    cy: float
    w: float
    h: float
    angle: float = 0.0  # degrees, clockwise on screen, OpenCV convention

    def validate(self, where: str | Path | None = None) -> "RotatedBox":
        vals = (self.cx, self.cy, self.w, self.h, self.angle)
        if not all(labelcheck.is_number(v) and math.isfinite(v) for v in vals):
            raw = dict(zip(("cx", "cy", "w", "h", "angle"), vals))
            raise LabelError(where, f"box {raw} has a non-finite value or one that is not a number")
        if self.w <= 0 or self.h <= 0:
            raise LabelError(where, f"box {self.as_dict()} has zero or negative size")
        if not -180.0 <= self.angle <= 180.0:
            raise LabelError(where, f"box angle {self.angle} is out of range [-180, 180] degrees")
        return self

    def corners(self) -> np.ndarray:
        """(4, 2) corner points (x, y), in order around the box."""
        t = math.radians(self.angle)
        ux, uy = math.cos(t) * self.w / 2, math.sin(t) * self.w / 2     # half width axis
        vx, vy = -math.sin(t) * self.h / 2, math.cos(t) * self.h / 2    # half height axis
        c = np.array([self.cx, self.cy])
        return np.array([c - (ux, uy) - (vx, vy), c + (ux, uy) - (vx, vy),
                         c + (ux, uy) + (vx, vy), c - (ux, uy) + (vx, vy)], dtype=np.float64)

    def polygon(self) -> Polygon:
        return Polygon(self.corners())

    def as_dict(self) -> dict:
        return {"cx": float(self.cx), "cy": float(self.cy), "w": float(self.w), "h": float(self.h),
                "angle": float(self.angle)}

    @classmethod
    def from_dict(cls, d: dict, where: str | Path | None = None, field: str = "box") -> "RotatedBox":
        """A box from ``{"cx", "cy", "w", "h", "angle" (optional, 0)}``; ``field`` names it in errors."""
        labelcheck.mapping(d, where, field)
        missing = [k for k in ("cx", "cy", "w", "h") if k not in d]
        if missing:
            raise LabelError(where, f"field '{field}' has no {', '.join(repr(k) for k in missing)} "
                                    f"(a box needs cx, cy, w, h and optionally angle)")
        vals = [labelcheck.number(d[k], where, f"{field}.{k}") for k in ("cx", "cy", "w", "h")]
        angle = labelcheck.number(d.get("angle", 0.0), where, f"{field}.angle")
        return cls(*vals, angle).validate(where)

    @classmethod
    def from_corners(cls, pts: np.ndarray) -> "RotatedBox":
        """The minimum-area rotated rectangle around a set of (x, y) points."""
        (cx, cy), (w, h), angle = cv2.minAreaRect(np.asarray(pts, np.float32))
        return cls(float(cx), float(cy), max(float(w), 1e-3), max(float(h), 1e-3), float(angle))


def boxes_from_mask(mask: np.ndarray) -> list[RotatedBox]:
    """One minimum-area rotated box per 8-connected defect component, covering whole pixels.

    This is how the semi-supervised protocol turns a ground-truth mask into the box a human
    would draw (paper section 3.1: "the smallest rotated rectangle that can just cover a
    defective region").
    """
    mask = np.asarray(mask, bool)
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    boxes = []
    offsets = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
    for k in range(1, n):
        comp = (lab == k).astype(np.uint8)
        contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
        # Pixel (x, y) covers the square [x, x+1] x [y, y+1]: use the squares' corners.
        corners = (pts[:, None, :] + offsets[None]).reshape(-1, 2)
        boxes.append(RotatedBox.from_corners(corners))
    return boxes


def block_cells_from_mask(mask: np.ndarray, image_size: int, block: int, eps_pos: float) -> "BlockCells":
    """The block label a person would paint for ``mask`` on the block tool's grid (``image_size``,
    ``block``): the cells Eq. 14 calls anomalous (coverage above ``eps_pos``). A defect too small
    to fill any cell that far still gets its most covered cell(s): a person marks where the defect
    is, and an empty block label would say the image is normal."""
    h, w = np.asarray(mask).shape[:2]
    grid = BlockGrid.for_image(w, h, image_size, block)
    cov = mask_coverage(mask, grid)
    marked = cov > eps_pos
    if not marked.any() and cov.max() > 0:
        marked = cov >= cov.max()
    return BlockCells(image_size, block, [(int(r), int(c)) for r, c in zip(*np.nonzero(marked))])


def rasterize_boxes(boxes: Iterable[RotatedBox], width: int, height: int) -> np.ndarray:
    """(height, width) bool mask of pixels whose centre lies inside the union of boxes.

    Boxes may cross the image border; only the part inside the image is drawn.
    """
    mask = np.zeros((height, width), bool)
    for b in boxes:
        poly = b.polygon()
        x0, y0, x1, y1 = poly.bounds
        c0, c1 = max(0, int(math.floor(x0))), min(width, int(math.ceil(x1)) + 1)
        r0, r1 = max(0, int(math.floor(y0))), min(height, int(math.ceil(y1)) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        xs, ys = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
        inside = shapely.contains_xy(poly, xs.ravel(), ys.ravel()).reshape(xs.shape)
        mask[r0:r1, c0:c1] |= inside
    return mask


def box_coverage(boxes: Iterable[RotatedBox], grid: BlockGrid) -> np.ndarray:
    """(rows, cols) exact fraction of each block's area inside the union of boxes.

    Computed geometrically (polygon intersection areas), not by counting pixels, so a box over a
    block corner gives the exact area fraction. Parts of boxes outside the image count for nothing.
    """
    cover = np.zeros((grid.rows, grid.cols), np.float64)
    polys = [b.polygon() for b in boxes]
    if not polys:
        return cover
    image_rect = shapely_box(0, 0, grid.width, grid.height)
    union = unary_union(polys).intersection(image_rect)
    if union.is_empty:
        return cover
    x0, y0, x1, y1 = union.bounds
    bw, bh = grid.block_w, grid.block_h
    c0, c1 = int(x0 // bw), min(grid.cols, int(math.ceil(x1 / bw)))
    r0, r1 = int(y0 // bh), min(grid.rows, int(math.ceil(y1 / bh)))
    rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    cells = shapely.box(cc * bw, rr * bh, (cc + 1) * bw, (rr + 1) * bh)
    shapely.prepare(union)
    cover[r0:r1, c0:c1] = shapely.area(shapely.intersection(cells, union)) / (bw * bh)
    return np.clip(cover, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Eq. 14 and Eq. 15
# --------------------------------------------------------------------------------------------
def mask_coverage(mask: np.ndarray, grid: BlockGrid) -> np.ndarray:
    """(rows, cols) fraction of each block's pixels that are defective.

    The mask is area-resampled to the model input (so a block's fraction is exact for integer
    scale factors and area-weighted otherwise) and averaged over each block.
    """
    mask = np.asarray(mask)
    if mask.shape != (grid.height, grid.width):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {grid.width}x{grid.height}")
    m = cv2.resize(mask.astype(np.float32), (grid.input_width, grid.input_height),
                   interpolation=cv2.INTER_AREA)
    b = grid.block
    return m.reshape(grid.rows, b, grid.cols, b).mean(axis=(1, 3))


def block_labels_from_mask(mask: np.ndarray, grid: BlockGrid, eps_pos: float,
                           eps_neg: float) -> np.ndarray:
    """Eq. 14: anomalous if coverage > eps+, normal if < eps-, otherwise ignored."""
    cov = mask_coverage(mask, grid)
    out = np.full(cov.shape, BLOCK_IGNORE, np.int8)
    out[cov > eps_pos] = BLOCK_ANOMALOUS
    out[cov < eps_neg] = BLOCK_NORMAL
    return out


def block_labels_from_boxes(boxes: Iterable[RotatedBox], grid: BlockGrid, v: float,
                            eps_neg: float | None = None) -> np.ndarray:
    """Eq. 15: unknown if more than v of the block lies inside the union of boxes, else normal.

    ``eps_neg``: blocks with box coverage in [eps_neg, v] are ignored instead of normal (the band
    Eq. 14 gives masks). Eq. 15 alone (``eps_neg=None``) calls a block normal when a box covers
    half of it or less, and on small defects that is where much of the defect is: on the PIPED dev
    classes 6-20% of the blocks a mask calls anomalous (Eq. 14, eps+ 25%) are "normal" by Eq. 15.
    """
    return block_labels_from_box_coverage(box_coverage(boxes, grid), v, eps_neg)


def block_labels_from_box_coverage(cov: np.ndarray, v: float, eps_neg: float | None = None) -> np.ndarray:
    """:func:`block_labels_from_boxes` from each block's covered fraction ``cov`` (rows, cols)."""
    out = np.where(cov > v, BLOCK_UNKNOWN, BLOCK_NORMAL).astype(np.int8)
    if eps_neg is not None:
        out[(cov >= eps_neg) & (cov <= v)] = BLOCK_IGNORE
    return out


# --------------------------------------------------------------------------------------------
# Per-image label
# --------------------------------------------------------------------------------------------
@dataclass
class BlockCells:
    """Blocks toggled on the canvas: the grid they were drawn on, and the marked cells."""

    image_size: int
    block: int
    cells: list[tuple[int, int]]

    def grid(self, width: int, height: int) -> BlockGrid:
        return BlockGrid.for_image(width, height, self.image_size, self.block)

    def validate(self, where: str | Path | None = None, width: int | None = None,
                 height: int | None = None, field: str = "blocks") -> "BlockCells":
        """Grid settings and cells well-formed; with the image size, every cell inside the grid."""
        labelcheck.block_grid(self.image_size, self.block, where, field)
        cells = [labelcheck.cell(rc, where, f"{field}.cells[{i}]")
                 for i, rc in enumerate(labelcheck.sequence(self.cells, where, f"{field}.cells"))]
        if width is not None and height is not None:
            g = self.grid(width, height)
            for r, c in cells:
                if r >= g.rows or c >= g.cols:
                    raise LabelError(where, f"block cell ({r}, {c}) is outside the {g.rows}x{g.cols} "
                                            f"grid of the {width}x{height} image")
        return self

    @classmethod
    def from_dict(cls, d: dict, where: str | Path | None = None, field: str = "blocks") -> "BlockCells":
        """Block cells from ``{"image_size", "block", "cells": [[row, col], ...]}``."""
        labelcheck.mapping(d, where, field)
        missing = [k for k in ("image_size", "block") if k not in d]
        if missing:
            raise LabelError(where, f"field '{field}' has no {', '.join(repr(k) for k in missing)} "
                                    f"(block labels need image_size, block and cells)")
        size, block = labelcheck.block_grid(d["image_size"], d["block"], where, field)
        cells = labelcheck.sequence(d.get("cells", []), where, f"{field}.cells")
        return cls(size, block, [labelcheck.cell(rc, where, f"{field}.cells[{i}]")
                                 for i, rc in enumerate(cells)])

    def to_mask(self, width: int, height: int) -> np.ndarray:
        g = self.grid(width, height)
        m = np.zeros((g.rows, g.cols), bool)
        for r, c in self.cells:
            if not (0 <= r < g.rows and 0 <= c < g.cols):
                raise LabelError(None, f"block cell ({r}, {c}) is outside the {g.rows}x{g.cols} grid")
            m[r, c] = True
        return g.blocks_to_mask(m)

    def as_dict(self) -> dict:
        return {"image_size": self.image_size, "block": self.block,
                "cells": [[int(r), int(c)] for r, c in self.cells]}


@dataclass
class ImageLabel:
    """Everything known about one image's defects. ``image`` is the image file's path."""

    image: Path
    width: int | None = None
    height: int | None = None
    tag: str | None = None
    boxes: list[RotatedBox] = field(default_factory=list)
    mask: np.ndarray | None = None
    blocks: BlockCells | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    # the part of ``seconds`` that was estimated, not measured (kinds absent: measured)
    seconds_estimated: dict[str, float] = field(default_factory=dict)

    def validate(self, where: str | Path | None = None) -> "ImageLabel":
        """Every rule a label must meet to train on (the one rule set of reading and storing):
        raises LabelError naming ``where`` (default: the image) and the problem."""
        where = where or self.image
        w, h = labelcheck.image_size(self.width, self.height, where)
        labelcheck.tag(self.tag, where)
        for b in labelcheck.sequence(self.boxes, where, "boxes"):
            if not isinstance(b, RotatedBox):
                raise LabelError(where, f"boxes must be RotatedBox objects, got {b!r}")
            b.validate(where)
        if self.mask is not None:
            if not isinstance(self.mask, np.ndarray) or self.mask.ndim != 2:
                raise LabelError(where, f"the mask must be a 2-D array, got "
                                        f"{getattr(self.mask, 'shape', type(self.mask).__name__)}")
            if w is not None and self.mask.shape != (h, w):
                raise LabelError(where, f"mask is {self.mask.shape[1]}x{self.mask.shape[0]} px but the "
                                        f"image is {w}x{h} px")
        if self.blocks is not None:
            if not isinstance(self.blocks, BlockCells):
                raise LabelError(where, f"blocks must be BlockCells, got {self.blocks!r}")
            self.blocks.validate(where, w, h)
        labelcheck.seconds(self.seconds, where)
        labelcheck.estimated_seconds(self.seconds_estimated, self.seconds, where)
        if w is not None and self.boxes:
            frame = shapely_box(0, 0, w, h)
            for b in self.boxes:
                # no area inside (also a box touching the border from outside): it marks no pixel
                if b.polygon().intersection(frame).area <= 0:
                    raise LabelError(where, f"box {b.as_dict()} lies wholly outside the {w}x{h} image")
        return self

    @property
    def kind(self) -> str | None:
        """The most informative label kind present, or None."""
        if self.mask is not None:
            return "mask"
        if self.blocks is not None:
            return "blocks"
        if self.boxes:
            return "boxes"
        if self.tag is not None:
            return "tag"
        return None

    @property
    def is_defective(self) -> bool | None:
        k = self.kind
        if k is None:
            return None
        if k == "tag":
            return self.tag == "defective"
        if k == "mask":
            return bool(self.mask.any())
        if k == "blocks":
            return bool(self.blocks.cells)
        return True

    def block_targets(self, grid: BlockGrid, eps_pos: float, eps_neg: float, v: float,
                      box_eps_neg: float | None = None) -> np.ndarray:
        """(rows, cols) int8 block labels on ``grid`` from the most informative label
        (``box_eps_neg``: the ignore band of boxes, :func:`block_labels_from_boxes`)."""
        if (grid.width, grid.height) != (self.width or grid.width, self.height or grid.height):
            raise LabelError(self.image, f"label is for a {self.width}x{self.height} image, "
                                         f"the image is {grid.width}x{grid.height}")
        k = self.kind
        if k == "mask":
            if self.mask.shape != (grid.height, grid.width):
                raise LabelError(self.image, f"mask is {self.mask.shape[1]}x{self.mask.shape[0]} px but "
                                             f"the image is {grid.width}x{grid.height} px")
            return block_labels_from_mask(self.mask, grid, eps_pos, eps_neg)
        if k == "blocks":
            return block_labels_from_mask(self.blocks.to_mask(grid.width, grid.height), grid,
                                          eps_pos, eps_neg)
        if k == "boxes":
            return block_labels_from_boxes(self.boxes, grid, v, box_eps_neg)
        if k == "tag":
            code = BLOCK_UNKNOWN if self.tag == "defective" else BLOCK_NORMAL
            return np.full((grid.rows, grid.cols), code, np.int8)
        return np.full((grid.rows, grid.cols), BLOCK_NORMAL, np.int8)

    # ---- JSON --------------------------------------------------------------------------------
    def to_json_dict(self, json_dir: Path, mask_name: str | None = None) -> dict:
        img = Path(self.image)
        try:
            img_ref = str(img.resolve().relative_to(json_dir.resolve()))
        except ValueError:
            img_ref = str(img.resolve())
        return {
            "format": FORMAT,
            "image": img_ref,
            "width": self.width, "height": self.height,
            "tag": self.tag,
            "boxes": [b.as_dict() for b in self.boxes],
            "mask": mask_name,
            "blocks": None if self.blocks is None else self.blocks.as_dict(),
            "seconds": {k: round(float(v), 3) for k, v in self.seconds.items()},
            **({"seconds_estimated": {k: round(float(v), 3) for k, v in self.seconds_estimated.items()}}
               if self.seconds_estimated else {}),
        }


def save_label(label: ImageLabel, json_path: str | Path) -> Path:
    """Write ``label`` as JSON (and its mask as ``<stem>_mask.png`` beside it), atomically."""
    json_path = Path(json_path)
    label.validate(json_path)
    mask_name = None
    if label.mask is not None:
        mask_name = f"{json_path.stem}_mask.png"
        write_mask(json_path.parent / mask_name, label.mask)
    atomic_write_text(json_path, json.dumps(label.to_json_dict(json_path.parent, mask_name), indent=2))
    return json_path


def load_label(json_path: str | Path, check_image: bool = True) -> ImageLabel:
    """Read one per-image JSON label; errors name the JSON file and the problem."""
    json_path = Path(json_path)
    try:
        d = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LabelError(json_path, "no such label file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelError(json_path, f"not valid JSON ({exc})") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise LabelError(json_path, f"not a SemiREST label file (expected \"format\": \"{FORMAT}\")")
    if "image" not in d:
        raise LabelError(json_path, "has no \"image\" entry")
    # Every field is checked for type and range here, so a hand-edited file fails now, naming the
    # file and the field, not later inside training.
    image = Path(labelcheck.text(d["image"], json_path, "image"))
    if not image.is_absolute():
        image = json_path.parent / image
    if check_image and not image.exists():
        raise LabelError(json_path, f"labels an image that does not exist: {image}")
    width, height = labelcheck.image_size(d.get("width"), d.get("height"), json_path)
    tag = labelcheck.tag(d.get("tag"), json_path)
    boxes = [RotatedBox.from_dict(b, json_path, f"boxes[{i}]")
             for i, b in enumerate(labelcheck.sequence(_or(d.get("boxes"), []), json_path, "boxes"))]
    blocks = None
    if d.get("blocks") is not None:
        blocks = BlockCells.from_dict(d["blocks"], json_path, "blocks")
    seconds = labelcheck.seconds(d.get("seconds"), json_path)
    estimated = labelcheck.seconds(d.get("seconds_estimated"), json_path, "seconds_estimated")
    mask = None
    if d.get("mask") is not None:
        mask = read_mask(json_path.parent / labelcheck.text(d["mask"], json_path, "mask"),
                         expected_hw=None if width is None else (height, width))
    label = ImageLabel(image=image, width=width, height=height, tag=tag, boxes=boxes,
                       mask=mask, blocks=blocks, seconds=seconds, seconds_estimated=estimated)
    return label.validate(json_path)


def _or(value, default):
    """``value``, or ``default`` for JSON null (an absent list)."""
    return default if value is None else value


def load_label_dir(folder: str | Path) -> dict[Path, ImageLabel]:
    """All ``*.json`` labels of a folder, keyed by resolved image path."""
    out: dict[Path, ImageLabel] = {}
    for p in sorted(Path(folder).glob("*.json")):
        lab = load_label(p)
        out[lab.image.resolve()] = lab
    return out
