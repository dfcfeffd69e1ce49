"""Label export for the app: the project's labels through core.data.formats. No Qt; runs in a job.

The formats themselves live in core.data.formats (MVTec masks, COCO with RLE masks and rotated-box
polygons, DOTA, LabelMe, the core's per-image JSON); this module only feeds them the store's
labels and splits the progress between formats.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from core.errors import Cancelled

from .store import Store

FORMAT_TITLES = {
    "mvtec": "MVTec layout (mask PNGs, 255 = defect)",
    "coco": "COCO JSON (RLE masks, rotated boxes as polygons)",
    "dota": "DOTA text (rotated boxes)",
    "labelme": "LabelMe JSON",
    "semirest": "SemiREST per-image JSON (what training reads)",
}


def available_formats() -> tuple[str, ...]:
    from core.data.formats import FORMATS
    return tuple(FORMATS)


def export_project(project: str | Path, formats: Sequence[str], out_dir: str | Path,
                   split: str | None = None,
                   progress: Callable[[int, int], bool | None] | None = None) -> dict:
    """Export every labelled image (of ``split``) in each format, into ``out_dir/<format>``."""
    from core.data.formats import export_labels

    out_dir = Path(out_dir)
    with Store.open(project) as store:
        ids = [r.id for r in store.images(split)]
        labelled = set(store.labelled_image_ids())
        ids = [i for i in ids if i in labelled]
        labels = []
        steps = len(ids) * (1 + len(formats))
        for n, image_id in enumerate(ids):
            labels.append(store.image_label(image_id))
            if progress is not None and progress(n + 1, steps) is False:
                raise Cancelled("export cancelled")
    reports = {}
    for k, fmt in enumerate(formats):
        base = len(ids) * (1 + k)

        def sub(done: int, total: int, base=base) -> bool | None:
            if progress is None:
                return None
            return progress(base + round(done / max(total, 1) * len(ids)), steps)

        reports[fmt] = export_labels(labels, fmt, out_dir / fmt, progress=sub)
    return reports
