"""MVTec AD ground truth: ``ground_truth/<defect type>/<stem>_mask.png``, 255 = defect.

Export writes one mask per defective image: the label's pixel mask, or its block labels painted to
pixels. The defect type is the image's folder in the MVTec layout (``test/<type>/000.png``), else
"defect". Normal images (tag "normal", or an empty mask) get no mask file, as in MVTec AD. Boxes,
a "defective" tag and anything a mask supersedes are reported in ``skipped``: a mask is never
faked from a box.

Import reads a category folder (``<cat>/test/<type>/*`` and ``<cat>/ground_truth/<type>/``) and
returns one label per test image: the ground-truth mask for defect types (size checked against
the image), tag "normal" for ``test/good``. train/good is not returned (its images are normal by
construction and are the training set, not labels). With ``image_root``, the test images are
read from ``<image_root>/test`` and the ground truth from ``<path>/ground_truth``, so masks exported
to another folder can be read back against the original category. Every defect-type test image
must have its mask, and every mask its test image (else a LabelError naming the file).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ImageReadError, LabelError
from ..images import encode_png, list_images, read_mask
from ..labels import ImageLabel
from ._common import (ExportContext, check_image_exists, defect_type, dropped_parts, pixel_mask,
                      read_image_size)

MASK_SUFFIX = "_mask.png"


class Exporter:
    def __init__(self, ctx: ExportContext):
        self.ctx = ctx

    def add(self, label: ImageLabel, rel: Path) -> None:
        check_image_exists(label)
        mask, source = pixel_mask(label)
        kept = {source} if source else set()
        normal = mask is None or not mask.any()
        if label.tag == "normal" and normal:
            kept.add("tag")          # MVTec's "normal" is the absence of a mask
        dropped = dropped_parts(label, kept)
        if dropped:
            why = ("MVTec ground truth holds pixel masks only" if source is None else
                   "the pixel mask was exported as the MVTec mask" if source == "mask" else
                   "the block labels were painted to pixels as the MVTec mask")
            extra = "; a mask is not made up from boxes" if label.boxes else ""
            self.ctx.skip(label.image, f"{why}: {', '.join(dropped)} not exported{extra}")
        if mask is None or normal:
            return
        image = Path(label.image)
        path = self.ctx.out_dir / "ground_truth" / defect_type(image) / f"{image.stem}{MASK_SUFFIX}"
        png = encode_png(np.where(mask, 255, 0).astype(np.uint8), rgb=False)
        self.ctx.output.add(path, png, image)

    def finish(self) -> None:
        pass


def _visible_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _test_label(img: Path, mp: Path | None) -> ImageLabel:
    """A test image's label: tag "normal" (``mp`` None: test/good), else its mask from ``mp``."""
    w, h = read_image_size(img)
    if mp is None:
        return ImageLabel(image=img, width=w, height=h, tag="normal")
    try:
        mask = read_mask(mp)
    except ImageReadError as exc:
        raise LabelError(mp, exc.problem) from exc
    if mask.shape != (h, w):
        raise LabelError(mp, f"mask is {mask.shape[1]}x{mask.shape[0]} px but its image {img} is {w}x{h} px")
    return ImageLabel(image=img, width=w, height=h, mask=mask).validate(mp)


def import_labels(path: Path, image_root: Path | None = None,
                  skipped: list[tuple[Path, str]] | None = None) -> list[ImageLabel]:
    """The labels of a category; see the module. ``skipped``: a test image whose mask is there but
    unusable (unreadable, the wrong size) is listed there as (image, reason) and left out, instead
    of stopping everything (an app import keeps the rest). The layout's own faults (no test/, a
    missing mask, a mask without its image) are raised either way."""
    root = path if image_root is None else image_root
    test = root / "test"
    if not test.is_dir():
        raise LabelError(root, "not an MVTec AD category folder: it has no test/ sub-folder")
    gt = path / "ground_truth"
    labels: list[ImageLabel] = []
    stems: dict[str, set[str]] = {}
    for type_dir in _visible_dirs(test):
        images = list_images(type_dir)
        stems[type_dir.name] = {p.stem for p in images}
        for img in images:
            mp = gt / type_dir.name / f"{img.stem}{MASK_SUFFIX}"
            if type_dir.name != "good" and not mp.is_file():
                raise LabelError(mp, f"ground-truth mask is missing for the test image {img}")
            try:
                labels.append(_test_label(img, None if type_dir.name == "good" else mp))
            except LabelError as exc:
                if skipped is None:
                    raise
                skipped.append((img, str(exc)))
    for type_dir in _visible_dirs(gt):
        for mp in sorted(type_dir.glob(f"*{MASK_SUFFIX}")):
            stem = mp.name[:-len(MASK_SUFFIX)]
            if stem not in stems.get(type_dir.name, set()):
                raise LabelError(mp, f"ground-truth mask for an image that does not exist "
                                     f"(no test/{type_dir.name}/{stem}.* in {root})")
    return labels
