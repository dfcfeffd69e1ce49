"""DOTA v1 text: one ``<stem>.txt`` per image, one rotated box per line::

    x1 y1 x2 y2 x3 y3 x4 y4 category difficult

The corners are :meth:`RotatedBox.corners`, clockwise on screen (image y points down); the
category is the MVTec defect type of the image (``test/<type>/``) or "defect"; difficult is 0.

Only rotated boxes are carried. An image tagged "normal" with no boxes is written as an empty
file (DOTA's "no objects"), and an empty file is read back as tag "normal". Masks, blocks and
a "defective" tag are reported in ``skipped``; an image with nothing DOTA can carry gets no file
(an empty file would claim it has no defects).

Import reads every ``*.txt`` below a folder (or one file). The image is found by stem under
``image_root`` (default: ``../images`` beside a ``labelTxt`` folder as in DOTA, else the folder
of the text files): first in the same sub-folder, then anywhere below it (it must be unique).
``imagesource:``/``gsd:`` header lines are skipped. Each box is the minimum-area rectangle around
its four points, so our own boxes come back as the same rectangle (the angle may differ by an
equivalent representation: compare polygons).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import LabelError
from ..labels import ImageLabel
from ._common import (ExportContext, ImageFinder, box_from_polygon, check_image_exists, defect_type,
                      dropped_parts, files_under, fmt_num, read_image_size)


class Exporter:
    def __init__(self, ctx: ExportContext):
        self.ctx = ctx

    def add(self, label: ImageLabel, rel: Path) -> None:
        check_image_exists(label)
        kept = {"boxes"}
        empty_normal = label.tag == "normal" and not label.boxes
        if empty_normal:
            kept.add("tag")
        dropped = dropped_parts(label, kept)
        if dropped:
            self.ctx.skip(label.image, f"DOTA carries rotated boxes only: {', '.join(dropped)} "
                                       f"not exported")
        if not label.boxes and not empty_normal:
            return
        category = defect_type(Path(label.image))
        lines = []
        for b in label.boxes:
            coords = " ".join(fmt_num(v) for v in b.corners().ravel())
            lines.append(f"{coords} {category} 0\n")
        path = self.ctx.out_dir / rel.parent / f"{rel.name}.txt"
        self.ctx.output.add_text(path, "".join(lines), label.image)

    def finish(self) -> None:
        pass


def _default_image_root(base: Path) -> Path:
    if base.name == "labelTxt" and (base.parent / "images").is_dir():
        return base.parent / "images"
    return base


def _find_image(finder: ImageFinder, txt: Path, rel: Path) -> Path:
    stem = txt.stem
    for candidates in (finder.in_dir(finder.root / rel, stem), finder.in_dir(finder.root, stem),
                       finder.by_stem(stem)):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise LabelError(txt, f"several images are named {stem!r}: "
                                  f"{', '.join(str(c) for c in candidates)}; cannot tell which this "
                                  f"label file is for")
    raise LabelError(txt, f"labels an image that does not exist: no image named {stem}.* under "
                          f"{finder.root}")


def _parse(txt: Path) -> list[np.ndarray]:
    try:
        text = txt.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(txt, f"cannot be read as UTF-8 text ({exc})") from exc
    polys = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.lower().startswith(("imagesource:", "gsd:")):
            continue
        fields = s.split()
        if len(fields) < 9:
            raise LabelError(txt, f"line {n}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 category "
                                  f"[difficult]', got {s!r}")
        try:
            pts = np.array([float(v) for v in fields[:8]], np.float64).reshape(4, 2)
        except ValueError:
            raise LabelError(txt, f"line {n}: the first eight fields must be numbers, got {s!r}") from None
        if not np.isfinite(pts).all():
            raise LabelError(txt, f"line {n}: coordinates must be finite, got {s!r}")
        if len(fields) >= 10 and fields[9] not in ("0", "1"):
            raise LabelError(txt, f"line {n}: difficult must be 0 or 1, got {fields[9]!r}")
        polys.append((n, pts))
    return polys


def import_labels(path: Path, image_root: Path | None) -> list[ImageLabel]:
    files = files_under(path, ".txt")
    base = path if path.is_dir() else path.parent
    finder = ImageFinder(image_root if image_root is not None else _default_image_root(base))
    out = []
    for txt in files:
        rel = txt.parent.relative_to(base)
        image = _find_image(finder, txt, rel)
        w, h = read_image_size(image, txt)
        boxes = [box_from_polygon(pts, txt, f"line {n}") for n, pts in _parse(txt)]
        label = ImageLabel(image=image, width=w, height=h, boxes=boxes,
                           tag=None if boxes else "normal")
        out.append(label.validate(txt))
    return out
