"""LabelMe JSON (v5 style): one ``<stem>.json`` per image.

Export, per image::

    {"version": "5.3.1", "flags": {"normal": false, "defective": true},
     "shapes": [...], "imagePath": "../images/000.png", "imageData": null,
     "imageHeight": 128, "imageWidth": 128,
     "semirest_seconds": {"boxes": 4.8}, "semirest_blocks": null, "semirest_has_mask": true}

- rotated box: ``"shape_type": "polygon"`` with its four corners (label "defect") and an extra
  ``"rbox": [cx, cy, w, h, angle]`` key on the shape. LabelMe keeps unknown shape keys when it
  re-saves a file (``Shape.other_data``); shape ``flags`` are not used because LabelMe shows them
  as check boxes and expects booleans there.
- pixel mask: one ``"shape_type": "mask"`` shape per 8-connected component (LabelMe 5.3+):
  ``points`` = the component's inclusive bounding box ``[[x1, y1], [x2, y2]]`` and ``mask`` =
  base64 PNG of the cropped component (255 = defect).
- block labels: painted to pixels and written as mask shapes marked ``"semirest_kind": "blocks"``;
  the cells themselves go to the top-level ``"semirest_blocks"`` so they come back exactly.
- tag: the image ``flags`` ``{"normal": bool, "defective": bool}``; seconds: ``semirest_seconds`` (and
  ``semirest_seconds_estimated``, their estimated part).
- ``imagePath`` is relative to the JSON file, as LabelMe writes it.

Import restores those, and reads shapes drawn by other users: a polygon becomes pixels of the
mask (pixel centres inside), except that a polygon that is exactly a rectangle (4 points, right
angles) is a rotated box; a ``rectangle`` is an axis-aligned box; a ``circle`` is rasterised to the
mask. An ``rbox`` or ``semirest_blocks`` that no longer matches its shapes (edited in LabelMe) is
ignored: the shapes win. Line and point shapes have no area and are an error.
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import cv2
import numpy as np

from ...errors import LabelError
from ..images import encode_png
from ..labelcheck import positive_int
from ..labels import ImageLabel, RotatedBox
from ._common import (DEFAULT_CATEGORY, ExportContext, blocks_from_dict, box_from_polygon,
                      box_from_stored, check_image_exists, check_tag, components, files_under,
                      first_existing, is_rectangle, label_size, painted_blocks,
                      rasterize_circle, rasterize_polygon, read_image_size, read_json, seconds_from)

VERSION = "5.3.1"


def _shape(shape_type: str, points, **extra) -> dict:
    d = {"label": DEFAULT_CATEGORY, "points": points, "group_id": None, "description": "",
         "shape_type": shape_type, "flags": {}, "mask": None}
    d.update(extra)
    return d


def _mask_shapes(mask: np.ndarray, kind: str) -> list[dict]:
    shapes = []
    for comp in components(mask):
        png = encode_png(np.where(comp.crop, 255, 0).astype(np.uint8), rgb=False)
        shapes.append(_shape("mask", [[comp.x, comp.y], [comp.x + comp.w - 1, comp.y + comp.h - 1]],
                             mask=base64.b64encode(png).decode("ascii"), semirest_kind=kind))
    return shapes


def _image_ref(image: Path, json_dir: Path) -> str:
    image = Path(os.path.abspath(image))
    try:
        ref = os.path.relpath(image, os.path.abspath(json_dir))
    except ValueError:        # another drive (Windows)
        ref = str(image)
    return ref.replace(os.sep, "/")


class Exporter:
    def __init__(self, ctx: ExportContext):
        self.ctx = ctx

    def add(self, label: ImageLabel, rel: Path) -> None:
        check_image_exists(label)
        w, h = label_size(label)
        json_path = self.ctx.out_dir / rel.parent / f"{rel.name}.json"
        shapes = [_shape("polygon", b.corners().tolist(),
                         rbox=[b.cx, b.cy, b.w, b.h, b.angle]) for b in label.boxes]
        if label.mask is not None:
            shapes += _mask_shapes(np.asarray(label.mask, bool), "mask")
        if label.blocks is not None:
            try:
                painted = label.blocks.to_mask(w, h)
            except LabelError as exc:
                raise LabelError(label.image, exc.problem) from exc
            shapes += _mask_shapes(painted, "blocks")
        doc = {
            "version": VERSION,
            "flags": {"normal": label.tag == "normal", "defective": label.tag == "defective"},
            "shapes": shapes,
            "imagePath": _image_ref(label.image, json_path.parent),
            "imageData": None,
            "imageHeight": h,
            "imageWidth": w,
            "semirest_seconds": {k: float(v) for k, v in label.seconds.items()},
            "semirest_seconds_estimated": {k: float(v) for k, v in label.seconds_estimated.items()},
            "semirest_blocks": None if label.blocks is None else label.blocks.as_dict(),
            "semirest_has_mask": label.mask is not None,
        }
        self.ctx.output.add_json(json_path, doc, label.image)

    def finish(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------
def _points(shape: dict, where: Path, what: str) -> np.ndarray:
    pts = shape.get("points")
    try:
        arr = np.asarray(pts, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise LabelError(where, f"{what}: \"points\" must be a list of [x, y] numbers, got {pts!r}")
    return arr


def _decode_mask(b64, where: Path, what: str) -> np.ndarray:
    if not isinstance(b64, str) or not b64:
        raise LabelError(where, f"{what}: a mask shape needs \"mask\" (base64 PNG)")
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LabelError(where, f"{what}: \"mask\" is not valid base64 ({exc})") from exc
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise LabelError(where, f"{what}: \"mask\" is not a decodable PNG image")
    if arr.ndim == 3:
        arr = arr[:, :, :3].max(axis=2) if arr.shape[2] != 2 else arr[:, :, 0]
    return arr > 0


def _find_image(d: dict, json_path: Path, rel: Path, image_root: Path | None) -> Path:
    ref = d.get("imagePath")
    if not isinstance(ref, str) or not ref:
        raise LabelError(json_path, "has no \"imagePath\"")
    ref_path = Path(ref.replace("\\", "/"))
    name = ref_path.name
    cands: list[Path | None] = []
    if ref_path.is_absolute():
        cands.append(ref_path)
    else:
        cands.append(json_path.parent / ref_path)
    if image_root is not None:
        cands += [None if ref_path.is_absolute() else image_root / ref_path,
                  image_root / rel / name, image_root / name]
    found = first_existing(cands)
    if found is None:
        raise LabelError(json_path, f"labels an image that does not exist: {ref}"
                                    + (f" (also looked under {image_root})" if image_root else ""))
    return found


def _read_one(json_path: Path, rel: Path, image_root: Path | None) -> ImageLabel:
    d = read_json(json_path)
    if not isinstance(d, dict) or not isinstance(d.get("shapes"), list):
        raise LabelError(json_path, "not a LabelMe file (expected an object with a \"shapes\" list)")
    image = _find_image(d, json_path, rel, image_root)
    if d.get("imageWidth") is None or d.get("imageHeight") is None:
        w, h = read_image_size(image, json_path)
    else:
        w = positive_int(d["imageWidth"], json_path, "imageWidth")
        h = positive_int(d["imageHeight"], json_path, "imageHeight")

    flags = d.get("flags") or {}
    if not isinstance(flags, dict):
        raise LabelError(json_path, f"\"flags\" must be an object, got {flags!r}")
    normal, defective = bool(flags.get("normal")), bool(flags.get("defective"))
    if normal and defective:
        raise LabelError(json_path, "flags \"normal\" and \"defective\" are both set")
    tag = check_tag("normal" if normal else "defective" if defective else None, json_path)

    boxes: list[RotatedBox] = []
    mask = np.zeros((h, w), bool)
    block_union = np.zeros((h, w), bool)
    has_mask = bool(d.get("semirest_has_mask"))
    has_block_shapes = False
    for i, s in enumerate(d["shapes"]):
        what = f"shape {i}"
        if not isinstance(s, dict):
            raise LabelError(json_path, f"{what} is not an object")
        st = s.get("shape_type") or "polygon"
        pts = _points(s, json_path, what)
        if st == "polygon":
            if len(pts) < 3:
                raise LabelError(json_path, f"{what}: a polygon needs at least 3 points, got {len(pts)}")
            box = box_from_stored(s.get("rbox"), pts, json_path, what)
            if box is None and is_rectangle(pts):
                box = box_from_polygon(pts, json_path, what)
            if box is not None:
                boxes.append(box)
            else:
                mask |= rasterize_polygon(pts, w, h)
                has_mask = True
        elif st == "rectangle":
            if len(pts) != 2:
                raise LabelError(json_path, f"{what}: a rectangle needs 2 points, got {len(pts)}")
            (x1, y1), (x2, y2) = pts
            if x1 == x2 or y1 == y2:
                raise LabelError(json_path, f"{what}: the rectangle {pts.tolist()} has zero size")
            boxes.append(RotatedBox((x1 + x2) / 2, (y1 + y2) / 2, abs(x2 - x1), abs(y2 - y1), 0.0)
                         .validate(json_path))
        elif st == "circle":
            if len(pts) != 2:
                raise LabelError(json_path, f"{what}: a circle needs 2 points, got {len(pts)}")
            (cx, cy), (px, py) = pts
            mask |= rasterize_circle(cx, cy, float(np.hypot(px - cx, py - cy)), w, h)
            has_mask = True
        elif st == "mask":
            if len(pts) != 2:
                raise LabelError(json_path, f"{what}: a mask shape needs 2 points (its bounding "
                                            f"box), got {len(pts)}")
            crop = _decode_mask(s.get("mask"), json_path, what)
            (x1, y1), (x2, y2) = pts.astype(int)
            if crop.shape != (y2 - y1 + 1, x2 - x1 + 1):
                raise LabelError(json_path, f"{what}: the mask is {crop.shape[1]}x{crop.shape[0]} px "
                                            f"but its points span {x2 - x1 + 1}x{y2 - y1 + 1} px")
            if x1 < 0 or y1 < 0 or x2 >= w or y2 >= h:
                raise LabelError(json_path, f"{what}: the mask at [[{x1}, {y1}], [{x2}, {y2}]] does "
                                            f"not fit in the {w}x{h} image")
            if s.get("semirest_kind") == "blocks":
                block_union[y1:y2 + 1, x1:x2 + 1] |= crop
                has_block_shapes = True
            else:
                mask[y1:y2 + 1, x1:x2 + 1] |= crop
                has_mask = True
        else:
            raise LabelError(json_path, f"{what}: shape_type {st!r} has no area; defects must be "
                                        f"polygon, rectangle, circle or mask shapes")

    blocks = blocks_from_dict(d.get("semirest_blocks"), json_path)
    if blocks is not None and not np.array_equal(painted_blocks(blocks, w, h, json_path), block_union):
        blocks = None           # edited outside the app: the shapes win
    if blocks is None and has_block_shapes:
        mask |= block_union
        has_mask = True
    label = ImageLabel(image=image, width=w, height=h, tag=tag, boxes=boxes,
                       mask=mask if has_mask else None, blocks=blocks,
                       seconds=seconds_from(d.get("semirest_seconds"), json_path),
                       seconds_estimated=seconds_from(d.get("semirest_seconds_estimated"), json_path,
                                                      "semirest_seconds_estimated"))
    return label.validate(json_path)


def import_labels(path: Path, image_root: Path | None) -> list[ImageLabel]:
    base = path if path.is_dir() else path.parent
    return [_read_one(p, p.parent.relative_to(base), image_root) for p in files_under(path, ".json")]
