"""Shared pieces of the format modules: staged output, output layout, geometry helpers, lookups.

Pixel convention (the canvas' and :func:`core.data.labels.rasterize_boxes`'): pixel (x, y) is the
square [x, x+1] x [y, y+1]; a polygon covers a pixel when it contains the pixel's centre.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon

from ...errors import ImageReadError, LabelError
from ...fileio import atomic_write_bytes
from .. import labelcheck
from ..images import IMAGE_SUFFIXES, image_size, is_image_file
from ..labels import BlockCells, ImageLabel, RotatedBox

DEFAULT_CATEGORY = "defect"
#: Largest distance (px) between a stored exact box's corners and the polygon written beside it
#: for the exact box to be trusted on import (else the polygon, e.g. edited in another tool, wins).
CORNER_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# Export plumbing
# ---------------------------------------------------------------------------------------------
class StagedOutput:
    """Output files kept in memory until the whole export has succeeded.

    A cancelled or failed export therefore writes nothing and leaves any earlier export in the
    folder untouched. :meth:`commit` writes every file atomically (core.fileio); if a write fails
    part way, the files this commit already wrote are removed again.
    """

    def __init__(self) -> None:
        self._files: dict[Path, bytes] = {}
        self._owner: dict[Path, Path] = {}

    def add(self, path: Path, data: bytes, image: Path) -> None:
        key = Path(os.path.normcase(os.path.abspath(path)))
        if key in self._owner:
            raise LabelError(image, f"would be written to {path}, which the label of "
                                    f"{self._owner[key]} is already written to (same file name); "
                                    f"rename one of the images")
        self._owner[key] = image
        self._files[Path(path)] = data

    def add_text(self, path: Path, text: str, image: Path) -> None:
        self.add(path, text.encode("utf-8"), image)

    def add_json(self, path: Path, obj, image: Path) -> None:
        self.add_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", image)

    def discard(self) -> None:
        self._files.clear()
        self._owner.clear()

    def commit(self) -> list[Path]:
        written: list[Path] = []
        try:
            for path, data in self._files.items():
                atomic_write_bytes(path, data)
                written.append(path)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        finally:
            self.discard()
        return written


@dataclass
class ExportContext:
    out_dir: Path
    labels: Sequence[ImageLabel]
    output: StagedOutput
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def skip(self, image: Path, reason: str) -> None:
        self.skipped.append((Path(image), reason))


def common_dir(labels: Sequence[ImageLabel]) -> Path | None:
    """The deepest folder holding every labelled image (None if there is none, e.g. two drives)."""
    if not labels:
        return None
    try:
        return Path(os.path.commonpath([os.path.abspath(Path(lab.image).parent) for lab in labels]))
    except ValueError:
        return None


def relative_stems(labels: Sequence[ImageLabel]) -> list[Path]:
    """Per label, ``<folder relative to the common image folder>/<image stem>``.

    Images in one folder give bare stems (a flat output); images from several folders (the
    MVTec test/<type>/000.png layout) keep their sub-folders, so equal stems do not collide.
    """
    root = common_dir(labels)
    out = []
    for lab in labels:
        img = Path(os.path.abspath(lab.image))
        rel = Path(os.path.relpath(img.parent, root)) if root is not None else Path(".")
        out.append(rel / img.stem)
    return out


def check_unique_images(labels: Sequence[ImageLabel]) -> None:
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):
        key = os.path.normcase(os.path.abspath(lab.image))
        if key in seen:
            raise LabelError(lab.image, f"is labelled twice in the export (labels {seen[key]} and {i})")
        seen[key] = i


def check_image_exists(label: ImageLabel) -> None:
    if not Path(label.image).is_file():
        raise LabelError(label.image, "the label is for an image that does not exist")


def label_size(label: ImageLabel) -> tuple[int, int]:
    """(width, height) of the labelled image: from the label, its mask, or the image file."""
    if label.width is not None and label.height is not None:
        return int(label.width), int(label.height)
    if label.mask is not None:
        return int(label.mask.shape[1]), int(label.mask.shape[0])
    return read_image_size(label.image)


def read_image_size(path: Path, where: Path | None = None) -> tuple[int, int]:
    try:
        return image_size(path)
    except ImageReadError as exc:
        raise LabelError(where or path, f"cannot read the image {path}: {exc.problem}") from exc


def defect_type(image: Path) -> str:
    """MVTec defect type of an image: its folder's name in ``test/<type>/``, else "defect"."""
    p = Path(image)
    parent, grand = p.parent.name, p.parent.parent.name
    if grand == "test" and parent and parent != "good":
        return parent
    return DEFAULT_CATEGORY


def dropped_parts(label: ImageLabel, kept: Iterable[str]) -> list[str]:
    """Descriptions of the label parts present in ``label`` but not in ``kept``."""
    kept = set(kept)
    out = []
    if label.mask is not None and "mask" not in kept:
        out.append("pixel mask")
    if label.blocks is not None and "blocks" not in kept:
        out.append(f"block labels ({len(label.blocks.cells)} cells)")
    if label.boxes and "boxes" not in kept:
        out.append(f"{len(label.boxes)} rotated box{'es' if len(label.boxes) != 1 else ''}")
    if label.tag is not None and "tag" not in kept:
        out.append(f"image tag {label.tag!r}")
    return out


def fmt_num(v: float) -> str:
    """A coordinate for text formats: 6 decimals, trailing zeros removed."""
    s = f"{float(v):.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


# ---------------------------------------------------------------------------------------------
# Masks and geometry
# ---------------------------------------------------------------------------------------------
@dataclass
class Component:
    x: int
    y: int
    w: int
    h: int
    crop: np.ndarray    # (h, w) bool mask of this component inside its bounding box
    area: int


def components(mask: np.ndarray) -> list[Component]:
    """8-connected foreground components of a bool mask, in label order (top-left first)."""
    m = np.asarray(mask, bool)
    if not m.any():
        return []
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        x, y, w, h, a = (int(v) for v in stats[k])
        out.append(Component(x, y, w, h, lab[y:y + h, x:x + w] == k, a))
    return out


def pixel_mask(label: ImageLabel) -> tuple[np.ndarray | None, str | None]:
    """The label's pixel mask and where it came from: its mask, else its blocks painted."""
    if label.mask is not None:
        return np.asarray(label.mask, bool), "mask"
    if label.blocks is not None:
        w, h = label_size(label)
        try:
            return label.blocks.to_mask(w, h), "blocks"
        except LabelError as exc:
            raise LabelError(label.image, exc.problem) from exc
    return None, None


def rasterize_polygon(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(height, width) bool mask of pixels whose centre lies inside the polygon."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    mask = np.zeros((height, width), bool)
    poly = Polygon(pts)
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    if poly.is_empty:
        return mask
    x0, y0, x1, y1 = poly.bounds
    c0, c1 = max(0, int(math.floor(x0))), min(width, int(math.ceil(x1)) + 1)
    r0, r1 = max(0, int(math.floor(y0))), min(height, int(math.ceil(y1)) + 1)
    if c0 >= c1 or r0 >= r1:
        return mask
    xs, ys = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    mask[r0:r1, c0:c1] = shapely.contains_xy(poly, xs.ravel(), ys.ravel()).reshape(xs.shape)
    return mask


def rasterize_circle(cx: float, cy: float, r: float, width: int, height: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= r * r


def fit_box(points: np.ndarray) -> RotatedBox:
    """:meth:`RotatedBox.from_corners` of the points, computed about their centroid.

    OpenCV fits in float32; shifting to the centroid first keeps the error relative to the box's
    size rather than to its distance from the image origin (a box at x = 5000 px would otherwise be
    off by ~1e-3 px).
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    c = pts.mean(axis=0)
    b = RotatedBox.from_corners(pts - c)
    return RotatedBox(b.cx + float(c[0]), b.cy + float(c[1]), b.w, b.h, b.angle)


def is_rectangle(points: np.ndarray, rel_tol: float = 1e-6) -> bool:
    """Four points forming a rectangle of non-zero area (in either winding)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if pts.shape != (4, 2):
        return False
    sides = np.roll(pts, -1, axis=0) - pts
    lengths = np.hypot(sides[:, 0], sides[:, 1])
    scale = float(lengths.max())
    if scale <= 0 or float(lengths.min()) <= 1e-9 * max(1.0, scale):
        return False
    for i in range(4):   # consecutive sides perpendicular
        a, b = sides[i], sides[(i + 1) % 4]
        if abs(float(a @ b)) > rel_tol * scale * scale + 1e-9:
            return False
    return True


def same_polygon(a: np.ndarray, b: np.ndarray, tol: float = CORNER_TOLERANCE) -> bool:
    """Two corner lists describe the same polygon: equal as point sets up to a cyclic shift and
    reversal, each point within ``tol`` px."""
    a = np.asarray(a, np.float64).reshape(-1, 2)
    b = np.asarray(b, np.float64).reshape(-1, 2)
    if a.shape != b.shape:
        return False
    for seq in (b, b[::-1]):
        for s in range(len(seq)):
            if np.abs(np.roll(seq, s, axis=0) - a).max() <= tol:
                return True
    return False


def box_from_stored(rbox, polygon_pts: np.ndarray | None, where: Path, what: str) -> RotatedBox | None:
    """The exact box stored as ``[cx, cy, w, h, angle]``, if well-formed and (when a polygon is
    given) matching the polygon's corners; else None (the caller falls back to the polygon)."""
    if rbox is None:
        return None
    if not (isinstance(rbox, (list, tuple)) and len(rbox) == 5
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) for v in rbox)):
        raise LabelError(where, f"{what}: \"rbox\" must be [cx, cy, w, h, angle], got {rbox!r}")
    box = RotatedBox(*(float(v) for v in rbox)).validate(where)
    if polygon_pts is not None and not same_polygon(box.corners(), polygon_pts):
        return None
    return box


def box_from_polygon(points: np.ndarray, where: Path, what: str) -> RotatedBox:
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if Polygon(pts).area <= 1e-9:
        raise LabelError(where, f"{what}: the points {pts.tolist()} enclose no area")
    return fit_box(pts).validate(where)


def blocks_from_dict(d, where: Path) -> BlockCells | None:
    return None if d is None else BlockCells.from_dict(d, where, "semirest_blocks")


def painted_blocks(blocks: BlockCells, width: int, height: int, where: Path) -> np.ndarray:
    try:
        return blocks.to_mask(width, height)
    except (LabelError, ValueError) as exc:
        raise LabelError(where, f"block labels: {getattr(exc, 'problem', exc)}") from exc


def seconds_from(d, where: Path, field: str = "semirest_seconds") -> dict[str, float]:
    return labelcheck.seconds(d, where, field)


def check_tag(tag, where: Path) -> str | None:
    return labelcheck.tag(tag, where, "semirest_tag")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def read_json(path: Path):
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise LabelError(path, "no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(path, f"cannot be read as UTF-8 text ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelError(path, f"not valid JSON ({exc})") from exc


def files_under(path: Path, suffix: str) -> list[Path]:
    """``path`` itself if it is a file, else every ``*suffix`` file below it (recursive, sorted,
    hidden files and folders excluded)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LabelError(path, "no such file or folder")
    out = []
    for p in sorted(path.rglob(f"*{suffix}")):
        rel = p.relative_to(path)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(p)
    return out


class ImageFinder:
    """Finds the image a label file refers to by a list of candidate paths, then by stem."""

    def __init__(self, root: Path | None):
        self.root = None if root is None else Path(root)
        self._by_stem: dict[str, list[Path]] | None = None
        self._dir_cache: dict[Path, dict[str, list[Path]]] = {}

    def in_dir(self, folder: Path, stem: str) -> list[Path]:
        folder = Path(folder)
        if folder not in self._dir_cache:
            idx: dict[str, list[Path]] = {}
            if folder.is_dir():
                for p in sorted(folder.iterdir()):
                    if p.is_file() and is_image_file(p):
                        idx.setdefault(p.stem, []).append(p)
            self._dir_cache[folder] = idx
        return self._dir_cache[folder].get(stem, [])

    def by_stem(self, stem: str) -> list[Path]:
        if self.root is None:
            return []
        if self._by_stem is None:
            self._by_stem = {}
            for p in sorted(self.root.rglob("*")):
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and is_image_file(p):
                    self._by_stem.setdefault(p.stem, []).append(p)
        return self._by_stem.get(stem, [])


def first_existing(candidates: Iterable[Path | None]) -> Path | None:
    for c in candidates:
        if c is not None and Path(c).is_file():
            return Path(c)
    return None
