"""The project's own per-image JSON (core.data.labels.save_label / load_label), one file per image.

Export writes exactly what :func:`core.data.labels.save_label` writes (``<stem>.json`` and, for a pixel
mask, ``<stem>_mask.png`` beside it), staged so a cancelled export writes nothing. Every label kind
is carried, so nothing is ever skipped.

Import reads every ``*.json`` below a folder (or one file) with :func:`core.data.labels.load_label`.
An image reference that does not resolve is looked for under ``image_root`` (same sub-folder, then
top level).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import ImageReadError, LabelError
from ..images import encode_png
from ..labels import ImageLabel, load_label
from ._common import ExportContext, check_image_exists, files_under, first_existing


class Exporter:
    def __init__(self, ctx: ExportContext):
        self.ctx = ctx

    def add(self, label: ImageLabel, rel: Path) -> None:
        check_image_exists(label)
        json_path = self.ctx.out_dir / rel.parent / f"{rel.name}.json"
        mask_name = None
        if label.mask is not None:
            mask_name = f"{json_path.stem}_mask.png"
            png = encode_png(np.where(np.asarray(label.mask, bool), 255, 0).astype(np.uint8), rgb=False)
            self.ctx.output.add(json_path.parent / mask_name, png, label.image)
        d = label.to_json_dict(json_path.parent, mask_name)
        self.ctx.output.add_text(json_path, json.dumps(d, indent=2), label.image)

    def finish(self) -> None:
        pass


def import_labels(path: Path, image_root: Path | None) -> list[ImageLabel]:
    out = []
    for p in files_under(path, ".json"):
        try:
            label = load_label(p, check_image=False)
        except ImageReadError as exc:           # the mask PNG: missing, corrupt or wrong size
            raise LabelError(exc.path or p, f"{exc.problem} (mask of label file {p})") from exc
        if not label.image.is_file():
            found = None
            if image_root is not None:
                rel = p.parent.relative_to(path) if path.is_dir() else Path(".")
                found = first_existing([image_root / rel / label.image.name,
                                        image_root / label.image.name])
            if found is None:
                raise LabelError(p, f"labels an image that does not exist: {label.image}")
            label.image = found
        out.append(label)
    return out
