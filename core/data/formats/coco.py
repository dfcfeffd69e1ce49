"""COCO instances JSON: one ``annotations.json`` for all images.

- ``images``: ``id`` (1..n), ``file_name`` (relative to the deepest folder holding every image,
  which is also stored as ``info.semirest_image_root``; absolute if there is none), ``width``,
  ``height``, and the image-level fields ``semirest_tag`` ("normal" | "defective" | null),
  ``semirest_seconds`` (annotation seconds per label kind; ``semirest_seconds_estimated`` their
  estimated part), ``semirest_blocks`` (the block cells,
  or null) and ``semirest_has_mask`` (the image has a pixel mask, possibly empty).
- ``categories``: one per defect type (the image's folder in MVTec's ``test/<type>/``), else
  "defect".
- ``annotations``: **one per 8-connected component** of a pixel mask, so each defect is one
  instance (per-defect recall and the COCO evaluation work as usual), with ``segmentation`` as
  compressed RLE exactly as pycocotools writes it (``{"size": [h, w], "counts": str}``),
  ``area`` = pixel count, ``bbox`` = [x, y, w, h] of the component's pixels, ``iscrowd`` 0.
  Block labels are painted to pixels and written the same way with ``"semirest_kind": "blocks"``.
  A rotated box is a 4-point polygon ``segmentation`` (its exact corners, possibly outside the
  image), ``bbox`` and ``area`` of its part inside the image, and ``"rbox": [cx, cy, w, h,
  angle]``. Every annotation has ``semirest_kind``: "mask", "blocks" or "box".

Import restores labels from that, and reads other tools' files: RLE (compressed or not) and
polygon segmentations become the pixel mask, except a polygon that is exactly a rectangle, which
is a rotated box (fitted with RotatedBox.from_corners); a stored ``rbox`` is used when it matches
its polygon; an annotation with only a ``bbox`` is an axis-aligned box. Relative ``file_name``\\ s
are resolved against ``image_root``, else ``info.semirest_image_root``, else the JSON's folder;
an absolute one that does not exist is looked for by name directly under ``image_root``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from shapely.geometry import box as shapely_box

from ...errors import LabelError
from ..labelcheck import positive_int
from ..labels import ImageLabel, RotatedBox
from . import rle
from ._common import (DEFAULT_CATEGORY, ExportContext, blocks_from_dict, box_from_polygon,
                      box_from_stored, check_image_exists, check_tag, common_dir, components,
                      defect_type, first_existing, is_rectangle, label_size, painted_blocks,
                      rasterize_polygon, read_json, seconds_from)

FILE_NAME = "annotations.json"


def _mask_annotations(mask: np.ndarray, kind: str) -> list[dict]:
    h = mask.shape[0]
    out = []
    for comp in components(mask):
        ys, xs = np.nonzero(comp.crop)
        idx = np.sort((xs.astype(np.int64) + comp.x) * h + ys + comp.y)
        out.append({"segmentation": rle.encode_indices(idx, h, mask.shape[1]),
                    "area": comp.area, "bbox": [comp.x, comp.y, comp.w, comp.h],
                    "iscrowd": 0, "semirest_kind": kind})
    return out


def _box_annotation(b: RotatedBox, width: int, height: int) -> dict:
    poly = b.polygon()
    inside = poly.intersection(shapely_box(0, 0, width, height))
    if inside.is_empty:
        bbox, area = [0.0, 0.0, 0.0, 0.0], 0.0
    else:
        x0, y0, x1, y1 = inside.bounds
        bbox, area = [x0, y0, x1 - x0, y1 - y0], float(inside.area)
    return {"segmentation": [b.corners().ravel().tolist()], "area": area, "bbox": bbox,
            "iscrowd": 0, "rbox": [b.cx, b.cy, b.w, b.h, b.angle], "semirest_kind": "box"}


class Exporter:
    def __init__(self, ctx: ExportContext):
        self.ctx = ctx
        self.root = common_dir(ctx.labels)
        names = sorted({defect_type(Path(lab.image)) for lab in ctx.labels} or {DEFAULT_CATEGORY})
        self.categories = {n: i + 1 for i, n in enumerate(names)}
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def _file_name(self, image: Path) -> str:
        image = Path(os.path.abspath(image))
        if self.root is None:
            return str(image)
        return Path(os.path.relpath(image, self.root)).as_posix()

    def add(self, label: ImageLabel, rel: Path) -> None:
        check_image_exists(label)
        w, h = label_size(label)
        image_id = len(self.images) + 1
        self.images.append({
            "id": image_id, "file_name": self._file_name(label.image), "width": w, "height": h,
            "semirest_tag": label.tag,
            "semirest_seconds": {k: float(v) for k, v in label.seconds.items()},
            "semirest_seconds_estimated": {k: float(v) for k, v in label.seconds_estimated.items()},
            "semirest_blocks": None if label.blocks is None else label.blocks.as_dict(),
            "semirest_has_mask": label.mask is not None,
        })
        anns = []
        if label.mask is not None:
            anns += _mask_annotations(np.asarray(label.mask, bool), "mask")
        if label.blocks is not None:
            anns += _mask_annotations(painted_blocks(label.blocks, w, h, label.image), "blocks")
        anns += [_box_annotation(b, w, h) for b in label.boxes]
        cat = self.categories[defect_type(Path(label.image))]
        for a in anns:
            self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id,
                                     "category_id": cat, **a})

    def finish(self) -> None:
        doc = {
            "info": {"description": "SemiREST Studio label export", "version": "1.0",
                     "semirest_image_root": None if self.root is None else str(self.root)},
            "licenses": [],
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i, "name": n, "supercategory": DEFAULT_CATEGORY}
                           for n, i in self.categories.items()],
        }
        path = self.ctx.out_dir / FILE_NAME
        self.ctx.output.add_json(path, doc, path)


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------
def _json_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise LabelError(path, "no such file or folder")
    if (path / FILE_NAME).is_file():
        return path / FILE_NAME
    found = sorted(p for p in path.glob("*.json") if p.is_file())
    if len(found) == 1:
        return found[0]
    raise LabelError(path, f"no {FILE_NAME} here" + (f" and several other JSON files "
                                                      f"({', '.join(p.name for p in found)})" if found else ""))


def _polygons(seg, where: Path, what: str) -> list[np.ndarray]:
    polys = []
    for p in seg:
        try:
            arr = np.asarray(p, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.ndim != 1 or arr.size < 6 or arr.size % 2 or not np.isfinite(arr).all():
            raise LabelError(where, f"{what}: a polygon must be a flat list [x1, y1, x2, y2, ...] of "
                                    f"at least 3 points, got {p!r}")
        polys.append(arr.reshape(-1, 2))
    return polys


def _buffer(entry: dict, key: str) -> np.ndarray:
    """The image's transposed (w, h) mask buffer ``key``, made on first use (images without
    masks cost no memory)."""
    if entry[key] is None:
        entry[key] = np.zeros((entry["w"], entry["h"]), bool)
    if key == "mask_t":
        entry["has_mask"] = True
    return entry[key]


def _build(e: dict, im: dict, where: Path) -> ImageLabel:
    blocks = blocks_from_dict(im.get("semirest_blocks"), where)
    union = None if e["blocks_t"] is None else e["blocks_t"].T
    if blocks is not None:
        painted = painted_blocks(blocks, e["w"], e["h"], where)
        if not np.array_equal(painted, union if union is not None else np.zeros_like(painted)):
            blocks = None           # edited elsewhere: the annotations win
    if blocks is None and union is not None:
        _buffer(e, "mask_t")[...] |= e["blocks_t"]
    mask = None
    if e["mask_t"] is not None:
        mask = np.ascontiguousarray(e["mask_t"].T)
    elif e["has_mask"]:
        mask = np.zeros((e["h"], e["w"]), bool)
    label = ImageLabel(image=e["image"], width=e["w"], height=e["h"],
                       tag=check_tag(im.get("semirest_tag"), where), boxes=e["boxes"],
                       mask=mask, blocks=blocks,
                       seconds=seconds_from(im.get("semirest_seconds"), where),
                       seconds_estimated=seconds_from(im.get("semirest_seconds_estimated"), where,
                                                      "semirest_seconds_estimated"))
    return label.validate(where)


def import_labels(path: Path, image_root: Path | None) -> list[ImageLabel]:
    jp = _json_file(path)
    d = read_json(jp)
    if not isinstance(d, dict) or not isinstance(d.get("images"), list):
        raise LabelError(jp, "not a COCO file (expected an object with an \"images\" list)")
    anns = d.get("annotations", [])
    if not isinstance(anns, list):
        raise LabelError(jp, "\"annotations\" must be a list")
    info = d.get("info") if isinstance(d.get("info"), dict) else {}
    stored_root = info.get("semirest_image_root")
    if image_root is not None:
        base = image_root
    elif isinstance(stored_root, str) and Path(stored_root).is_dir():
        base = Path(stored_root)
    else:
        base = jp.parent

    entries: dict = {}
    for k, im in enumerate(d["images"]):
        if not isinstance(im, dict):
            raise LabelError(jp, f"images[{k}] is not an object")
        for key in ("id", "file_name", "width", "height"):
            if key not in im:
                raise LabelError(jp, f"images[{k}] has no \"{key}\"")
        iid = im["id"]
        if not isinstance(iid, (int, str)) or isinstance(iid, bool):
            raise LabelError(jp, f"images[{k}]: \"id\" must be an integer, got {iid!r}")
        if iid in entries:
            raise LabelError(jp, f"images[{k}]: image id {iid} is used twice")
        fn = im["file_name"]
        if not isinstance(fn, str) or not fn:
            raise LabelError(jp, f"images[{k}]: \"file_name\" must be a path, got {fn!r}")
        w = positive_int(im["width"], jp, f"images[{k}].width")
        h = positive_int(im["height"], jp, f"images[{k}].height")
        ref = Path(fn.replace("\\", "/"))
        # an absolute file_name from another machine is looked for by name under image_root
        image = first_existing([ref, image_root / ref.name if image_root is not None else None]
                               if ref.is_absolute() else [base / ref, jp.parent / ref])
        if image is None:
            raise LabelError(jp, f"images[{k}] labels an image that does not exist: {fn} "
                                 f"(looked in {base})")
        entries[iid] = {"k": k, "image": image, "w": w, "h": h, "raw": im, "boxes": [],
                        "mask_t": None, "has_mask": bool(im.get("semirest_has_mask")),
                        "blocks_t": None}

    for j, a in enumerate(anns):
        if not isinstance(a, dict):
            raise LabelError(jp, f"annotations[{j}] is not an object")
        what = f"annotation {a.get('id', f'[{j}]')}"
        iid = a.get("image_id")
        if not isinstance(iid, (int, str)) or iid not in entries:
            raise LabelError(jp, f"{what} is for image id {iid!r}, which is not in \"images\"")
        e = entries[iid]
        w, h = e["w"], e["h"]
        seg = a.get("segmentation")
        kind = a.get("semirest_kind")
        if seg is not None and not isinstance(seg, (dict, list)):
            raise LabelError(jp, f"{what}: \"segmentation\" must be an RLE object or a list of "
                                 f"polygons, got {seg!r}")
        if isinstance(seg, dict):
            try:
                rh, rw, _ = rle.rle_counts(seg)
                if (rh, rw) != (h, w):
                    raise LabelError(jp, f"{what}: its RLE mask is {rw}x{rh} px but image "
                                         f"{e['raw']['file_name']} is {w}x{h} px")
                rle.paint(seg, _buffer(e, "blocks_t" if kind == "blocks" else "mask_t"))
            except rle.RLEError as exc:
                raise LabelError(jp, f"{what}: {exc}") from exc
        elif isinstance(seg, list) and seg:
            polys = _polygons(seg, jp, what)
            box = None
            if len(polys) == 1:
                box = box_from_stored(a.get("rbox"), polys[0], jp, what)
                if box is None and is_rectangle(polys[0]):
                    box = box_from_polygon(polys[0], jp, what)
            if box is not None:
                e["boxes"].append(box)
            else:
                for p in polys:
                    _buffer(e, "mask_t")[...] |= rasterize_polygon(p, w, h).T
        elif a.get("rbox") is not None:
            e["boxes"].append(box_from_stored(a["rbox"], None, jp, what))
        elif a.get("bbox") is not None:
            bb = a["bbox"]
            if not (isinstance(bb, list) and len(bb) == 4
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            and math.isfinite(v) for v in bb)):
                raise LabelError(jp, f"{what}: \"bbox\" must be [x, y, w, h], got {bb!r}")
            x, y, bw, bh = (float(v) for v in bb)
            if bw <= 0 or bh <= 0:
                raise LabelError(jp, f"{what}: \"bbox\" {bb} has zero size")
            e["boxes"].append(RotatedBox(x + bw / 2, y + bh / 2, bw, bh, 0.0).validate(jp))
        else:
            raise LabelError(jp, f"{what} has no \"segmentation\" and no \"bbox\"")

    labels = []
    for iid, e in entries.items():
        im = e["raw"]
        try:
            labels.append(_build(e, im, jp))
        except LabelError as exc:
            raise LabelError(jp, f"images[{e['k']}] ({im['file_name']}): {exc.problem}") from exc
    return labels
