"""Label import and export in the formats users expect.

=========  ==========================================  ==========================================
format     export (out_dir)                             carries
=========  ==========================================  ==========================================
semirest   ``<stem>.json`` (+ ``<stem>_mask.png``)      everything (the project's own format)
mvtec      ``ground_truth/<type>/<stem>_mask.png``      pixel masks (blocks painted to pixels)
coco       ``annotations.json`` (RLE masks)             masks, blocks, boxes, tags, seconds
dota       ``<stem>.txt`` (DOTA v1 polygons)            rotated boxes (and "normal" as empty file)
labelme    ``<stem>.json`` (LabelMe 5 shapes)           masks, blocks, boxes, tags, seconds
=========  ==========================================  ==========================================

Per-image formats write ``<stem>.*`` flat when every image is in one folder; images from several
folders (e.g. MVTec ``test/<type>/000.png``) keep their folders relative to the deepest common
one, so equal stems do not collide.

Parts of a label that a format cannot carry are listed in :attr:`ExportReport.skipped` as
``(image, reason)``; the rest of that label is still written.

Exports are staged in memory and written (atomically, file by file) only when every label has
been converted, so an error or a cancel from ``progress`` leaves ``out_dir`` as it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ...errors import Cancelled
from ..labels import ImageLabel
from . import coco, dota, labelme, mvtec, semirest
from ._common import ExportContext, StagedOutput, check_unique_images, relative_stems

FORMATS = ("mvtec", "coco", "dota", "labelme", "semirest")

_MODULES = {"mvtec": mvtec, "coco": coco, "dota": dota, "labelme": labelme, "semirest": semirest}


@dataclass
class ExportReport:
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (image, reason)


def _module(fmt: str):
    try:
        return _MODULES[fmt]
    except (KeyError, TypeError):
        raise ValueError(f"unknown label format {fmt!r}; choose one of {', '.join(FORMATS)}") from None


def export_labels(labels: Sequence[ImageLabel], fmt: str, out_dir: str | Path,
                  progress: Callable[[int, int], bool | None] | None = None) -> ExportReport:
    """Write ``labels`` to ``out_dir`` in format ``fmt``.

    ``progress(done, total)`` is called after each image; returning False cancels: nothing of
    this export is left in ``out_dir`` and :class:`~core.errors.Cancelled` is raised.
    Invalid labels raise :class:`~core.errors.LabelError` naming the image (nothing written).
    """
    module = _module(fmt)
    labels = list(labels)
    out_dir = Path(out_dir)
    check_unique_images(labels)
    output = StagedOutput()
    ctx = ExportContext(out_dir=out_dir, labels=labels, output=output)
    try:
        exporter = module.Exporter(ctx)
        total = len(labels)
        for i, (label, rel) in enumerate(zip(labels, relative_stems(labels))):
            label.validate(label.image)
            exporter.add(label, rel)
            if progress is not None and progress(i + 1, total) is False:
                raise Cancelled(f"{fmt} export to {out_dir} cancelled after {i + 1} of {total} "
                                f"images; no files were written")
        exporter.finish()
        files = output.commit()
    except BaseException:
        output.discard()
        raise
    return ExportReport(files=files, skipped=ctx.skipped)


def import_labels(path: str | Path, fmt: str, image_root: str | Path | None = None) -> list[ImageLabel]:
    """Read labels in format ``fmt`` from ``path`` (a file or folder, see each format).

    ``image_root`` is where images are looked for when the files' own references do not resolve
    (COCO: the folder ``file_name`` is relative to). Errors are
    :class:`~core.errors.LabelError` naming the file and the problem.
    """
    module = _module(fmt)
    return module.import_labels(Path(path), None if image_root is None else Path(image_root))


__all__ = ["FORMATS", "ExportReport", "export_labels", "import_labels"]
