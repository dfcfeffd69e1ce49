"""Importing images (a folder, or an MVTec-layout dataset with its masks) into a project. No Qt.

Every file is fully decoded (core.images) before it is accepted, so corrupt, truncated, empty or
mislabelled files are caught here, listed with the reason, and skipped; nothing half-imported
reaches the project. The thumbnail is made from the same decode, so the image list never has to
open a large image again. Decoding happens outside any transaction; rows are then written in
short batches, so a window labelling meanwhile never waits, and a kill or a cancel keeps what was
already imported (the re-run skips it: "already in the project").

Runs in a worker thread with its own Store connection; ``progress(done, total)`` returning False
cancels (between files).
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from core.errors import SemiRestError
from core.fileio import atomic_path
from core.images import encode_png, is_image_file, read_image
from core.labels import ImageLabel

from .settings import SPLITS, THUMB_SIZE
from .store import IMAGES_DIR, PROJECT_DB, Store, file_sha1

BATCH = 32                 # files per write transaction
WRITE_EVERY_S = 0.5        # ... or sooner, for slow (large) files
Progress = Callable[[int, int], "bool | None"]


@dataclass
class ImportReport:
    added: list[int] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)   # (file, reason)
    labelled: int = 0
    cancelled: bool = False

    def summary(self) -> str:
        parts = [f"{len(self.added)} image{'s' if len(self.added) != 1 else ''} imported"]
        if self.labelled:
            parts.append(f"{self.labelled} with labels")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        if self.cancelled:
            parts.append("cancelled")
        return ", ".join(parts)


def scan_folder(folder: str | Path, recursive: bool = True, skip: Path | None = None) -> list[Path]:
    """Image files under ``folder`` (by suffix; content is checked on import), sorted."""
    folder = Path(folder)
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    out = []
    for root, dirs, files in os.walk(folder):
        root_p = Path(root)
        # Skip hidden folders and the project itself (importing a folder that contains it).
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (root_p / d / PROJECT_DB).exists()
                         and (skip is None or (root_p / d).resolve() != skip))
        out.extend(root_p / f for f in sorted(files) if is_image_file(f))
    return out


def make_thumbnail(rgb: np.ndarray, size: int = THUMB_SIZE) -> bytes:
    h, w = rgb.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return encode_png(small)


def _copy_into(store: Store, src: Path, rel: Path) -> Path:
    """Copy ``src`` to images/<rel> in the project (a free name), atomically."""
    dest = store.folder / IMAGES_DIR / rel
    stem, n = dest.stem, 1
    while dest.exists():
        dest = dest.with_name(f"{stem}-{n}{dest.suffix}")
        n += 1
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


@dataclass
class _Prepared:
    """A file decoded, hashed, thumbnailed (and copied): ready for a short write."""

    source: Path
    target: Path
    split: str
    width: int
    height: int
    sha1: str
    thumb: bytes
    label: ImageLabel | None


def import_files(store: Store, files: Sequence[Path], *, copy: bool, split: str | Sequence[str],
                 root: Path | None = None, labels: dict[Path, ImageLabel] | None = None,
                 progress: Progress | None = None) -> ImportReport:
    """Import ``files`` (split per file or one for all); ``labels`` keyed by resolved path.

    The slow part (decode, hash, thumbnail, copy) runs outside any transaction; prepared files are
    written in short batches, so a window labelling meanwhile never waits on the import's lock.
    """
    splits = [split] * len(files) if isinstance(split, str) else list(split)
    for s in set(splits):
        if s not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {s!r}")
    report = ImportReport()
    total = len(files)
    pending: list[_Prepared] = []
    last_write = time.monotonic()
    for i, path in enumerate(files):
        if progress is not None and progress(i, total) is False:
            report.cancelled = True
            break
        item = _prepare(store, Path(path), copy, splits[i], root, labels)
        if isinstance(item, str):
            report.skipped.append((Path(path), item))
        else:
            pending.append(item)
        # Write often enough that other windows see progress and a kill keeps what is done.
        if len(pending) >= BATCH or (pending and time.monotonic() - last_write > WRITE_EVERY_S):
            _write(store, pending, report)
            pending, last_write = [], time.monotonic()
    _write(store, pending, report)
    if progress is not None and not report.cancelled:
        progress(total, total)
    return report


def _prepare(store: Store, path: Path, copy: bool, split: str, root: Path | None,
             labels: dict[Path, ImageLabel] | None) -> _Prepared | str:
    """Decode and check one file (and copy it in); return why it is skipped, if it is."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8 (rename the file)"
    try:
        if store.is_imported(path):
            return "already in the project"
        rgb = read_image(path)                     # full decode: catches corrupt/truncated files
        sha1 = file_sha1(path)
        label = labels.get(path.resolve()) if labels else None
        h, w = rgb.shape[:2]
        if label is not None and label.mask is not None and label.mask.shape != (h, w):
            return f"its mask is {label.mask.shape[1]}x{label.mask.shape[0]} px, the image {w}x{h} px"
        thumb = make_thumbnail(rgb)
        target = path
        if copy:
            rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
            target = _copy_into(store, path, Path(root.name if root else "") / rel)
    except SemiRestError as exc:
        return getattr(exc, "problem", None) or str(exc)
    except OSError as exc:
        return f"cannot be read or copied ({exc.strerror or exc})"
    return _Prepared(path, target, split, w, h, sha1, thumb, label)


def _write(store: Store, items: list[_Prepared], report: ImportReport) -> None:
    """One short transaction for a batch of prepared files (rows, thumbnails, labels)."""
    if not items:
        return
    added, labelled, dupes = [], 0, []
    try:
        with store.transaction():
            for it in items:
                if store.is_imported(it.source):      # imported meanwhile by another window
                    dupes.append(it)
                    continue
                image_id = store.add_image(it.target, copied=it.target != it.source, width=it.width,
                                           height=it.height, split=it.split, sha1=it.sha1,
                                           thumbnail_png=it.thumb, source=it.source)
                added.append(image_id)
                if it.label is not None and _store_label(store, image_id, it.label):
                    labelled += 1
    except BaseException:
        for it in items:                               # nothing of the batch is in: drop its copies
            if it.target != it.source:
                it.target.unlink(missing_ok=True)
        raise
    for it in dupes:
        if it.target != it.source:
            it.target.unlink(missing_ok=True)
        report.skipped.append((it.source, "already in the project"))
    report.added += added
    report.labelled += labelled


def _store_label(store: Store, image_id: int, label: ImageLabel) -> bool:
    wrote = False
    if label.mask is not None and label.mask.any():
        store.save_mask(image_id, label.mask)
        wrote = True
    if label.boxes:
        store.save_boxes(image_id, label.boxes)
        wrote = True
    if label.blocks is not None and label.blocks.cells:
        store.save_blocks(image_id, label.blocks)
        wrote = True
    if label.tag is not None:
        store.save_tag(image_id, label.tag)
        wrote = True
    return wrote


def import_folder(store: Store, folder: str | Path, *, copy: bool, split: str,
                  progress: Progress | None = None) -> ImportReport:
    folder = Path(folder).resolve()
    files = scan_folder(folder, skip=store.folder)
    return import_files(store, files, copy=copy, split=split, root=folder, progress=progress)


def mvtec_split(category: Path, image: Path) -> str:
    """MVTec's train/ -> train, test/ -> test, validation/ -> val."""
    try:
        first = Path(image).resolve().relative_to(category.resolve()).parts[0]
    except (ValueError, IndexError):
        return "test"
    return {"train": "train", "validation": "val", "val": "val"}.get(first, "test")


def import_mvtec(store: Store, category: str | Path, *, copy: bool,
                 progress: Progress | None = None) -> ImportReport:
    """An MVTec-layout category: train/good and test/* images, ground_truth masks as labels.

    The layout is read by core.formats (``import_labels(..., "mvtec")``): one ImageLabel per test
    image (masks from ground_truth, tag "normal" for good ones). Training images are plain normal
    images and get no label, like in MVTec AD itself.
    """
    from core.formats import import_labels   # the formats engineer's module (parallel branch)

    category = Path(category).resolve()
    if not (category / "train").is_dir() and not (category / "test").is_dir():
        raise SemiRestError(f"{category}: not an MVTec-layout category (no train/ or test/ folder)")
    labels = {Path(lab.image).resolve(): lab for lab in import_labels(category, "mvtec")}
    files = scan_folder(category / "train") if (category / "train").is_dir() else []
    for f in files:   # MVTec's training images are known good: say so, so the filters agree
        if f.parent.name == "good":
            labels.setdefault(f.resolve(), ImageLabel(image=f, tag="normal"))
    files += scan_folder(category / "test") if (category / "test").is_dir() else []
    known = {f.resolve() for f in files}
    files += sorted(p for p in labels if p not in known)   # anything the format found that we did not
    splits = [mvtec_split(category, f) for f in files]
    return import_files(store, files, copy=copy, split=splits, root=category, labels=labels,
                        progress=progress)
