"""Importing images (a folder, or an MVTec-layout dataset with its masks) into a project. No Qt.

Every file is fully decoded (core.data.images) before it is accepted, so corrupt, truncated, empty or
mislabelled files are caught here, listed with the reason, and skipped; nothing half-imported
reaches the project. The thumbnail is made from the same decode, so the image list never has to
open a large image again. Decoding happens outside any transaction; rows are then written in
short batches, so a window labelling meanwhile never waits, and a kill or a cancel keeps what was
already imported (the re-run skips it: "already in the project"). Copies reach their final name
only once their row is committed (app/project/import_copies.py), so a kill leaves no orphan copy either.

A problem of the project itself (a full disk, a read-only folder, a locked database) stops the
import with a StoreError naming the place; what was committed before stays. A source that is not
there, or holds no images, is refused before anything is written (:func:`check_folder`).

Runs in a worker thread with its own Store connection; ``progress(done, total)`` returning False
cancels (between files).
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from core.data.images import IMAGE_SUFFIXES, encode_png, is_image_file, read_image
from core.data.labels import ImageLabel
from core.errors import DatasetError, SemiRestError

from . import import_copies as copies
from . import label_estimates
from ..settings import SPLITS, THUMB_SIZE
from .store import BUSY_TIMEOUT_S, IMAGES_DIR, PROJECT_DB, Store, StoreError, file_sha1
from .store_errors import db_problem, os_problem

BATCH = 32                 # files per write transaction
WRITE_EVERY_S = 0.5        # ... or sooner, for slow (large) files
Progress = Callable[[int, int], "bool | None"]


@dataclass
class ImportReport:
    added: list[int] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)   # (file, reason)
    labelled: int = 0
    cancelled: bool = False
    cost: object = None       # core.data.labelcost.LabelCostModel the estimated seconds came from

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
    return list(_walk_images(folder, skip))


def _walk_images(folder: Path, skip: Path | None):
    for root, dirs, files in os.walk(folder):
        root_p = Path(root)
        # Skip hidden folders and the project itself (importing a folder that contains it).
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (root_p / d / PROJECT_DB).exists()
                         and (skip is None or (root_p / d).resolve() != skip))
        yield from (root_p / f for f in sorted(files) if is_image_file(f))


def _check_dir(folder: Path) -> Path:
    if not folder.exists():
        raise DatasetError(folder, "no such folder")
    if not folder.is_dir():
        raise DatasetError(folder, "not a folder (give the folder that holds the images)")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DatasetError(folder, "the folder cannot be read (no permission)")
    return folder.resolve()


def check_folder(folder: str | Path, skip: Path | None = None) -> Path:
    """The folder to import, resolved; DatasetError when it is not there or holds no image.

    Called before anything is written (the headless ``--new DIR --import FOLDER`` checks it before
    it creates the project), so a mistyped path leaves nothing behind. ``skip``: the project.
    """
    folder = _check_dir(Path(folder))
    if next(_walk_images(folder, skip), None) is None:
        raise DatasetError(folder, f"no images in this folder or its sub-folders "
                                   f"(looked for {' '.join(IMAGE_SUFFIXES)})")
    return folder


def check_mvtec(category: str | Path) -> Path:
    """The MVTec-layout category folder, resolved; DatasetError when it is not one."""
    category = _check_dir(Path(category))
    if not (category / "train").is_dir() and not (category / "test").is_dir():
        raise DatasetError(category, "not an MVTec-layout category (no train/ or test/ folder)")
    return category


def make_thumbnail(rgb: np.ndarray, size: int = THUMB_SIZE) -> bytes:
    h, w = rgb.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return encode_png(small)


def _copy_in(store: Store, src: Path, rel: Path, sha1: str, taken: set[Path]) -> tuple[Path, Path | None]:
    """Copy ``src`` in, for images/<rel> (or the next free name): (final path, pending copy;
    None when a killed import left this very file there already)."""
    final, there = copies.reserve(store, store.folder / IMAGES_DIR / rel, sha1, taken)
    if there:
        return final, None
    try:
        return final, copies.copy_pending(src, final)
    except OSError as exc:
        problem = os_problem(exc)
        if problem is None or exc.filename == str(src):
            raise                                    # the source's problem: this file is skipped
        raise StoreError(f"{final.parent}: {problem}") from exc   # the project's: the import stops


@dataclass
class _Prepared:
    """A file decoded, hashed, thumbnailed (and copied): ready for a short write."""

    source: Path
    target: Path
    pending: Path | None     # the copy under its pending name until the row commits
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
    Raises StoreError when the project cannot be written (full, read-only, locked): the batches
    committed before are kept, nothing of the rest is left behind.
    """
    splits = [split] * len(files) if isinstance(split, str) else list(split)
    for s in set(splits):
        if s not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {s!r}")
    report = ImportReport()
    total = len(files)
    pending: list[_Prepared] = []
    taken: set[Path] = set()                       # copy names reserved by this import
    last_write = time.monotonic()
    try:
        copies.recover(store)                      # what a killed import left (no-op otherwise)
        if labels:   # calibrated once, before any write lock is taken (it decodes the measured masks)
            report.cost = label_estimates.project_cost_model(store)
        for i, path in enumerate(files):
            if progress is not None and progress(i, total) is False:
                report.cancelled = True
                break
            item = _prepare(store, Path(path), copy, splits[i], root, labels, taken)
            if isinstance(item, str):
                report.skipped.append((Path(path), item))
            else:
                pending.append(item)
            # Write often enough that other windows see progress and a kill keeps what is done.
            if len(pending) >= BATCH or (pending and time.monotonic() - last_write > WRITE_EVERY_S):
                batch, pending = pending, []
                _write(store, batch, report, taken)
                last_write = time.monotonic()
        batch, pending = pending, []
        _write(store, batch, report, taken)
    except sqlite3.Error as exc:
        raise StoreError(f"{store.db_path}: {db_problem(exc, BUSY_TIMEOUT_S)}") from exc
    finally:
        for it in pending:                         # prepared, never written: leave nothing behind
            copies.discard(it.pending)
    if progress is not None and not report.cancelled:
        progress(total, total)
    return report


def _prepare(store: Store, path: Path, copy: bool, split: str, root: Path | None,
             labels: dict[Path, ImageLabel] | None, taken: set[Path]) -> _Prepared | str:
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
        target, pending = path, None
        if copy:
            rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
            target, pending = _copy_in(store, path, Path(root.name if root else "") / rel, sha1, taken)
    except SemiRestError as exc:
        return getattr(exc, "problem", None) or str(exc)
    except OSError as exc:
        return f"cannot be read or copied ({exc.strerror or exc})"
    return _Prepared(path, target, pending, split, w, h, sha1, thumb, label)


def _write(store: Store, items: list[_Prepared], report: ImportReport, taken: set[Path]) -> None:
    """One short transaction for a batch of prepared files (rows, thumbnails, labels); then the
    copies get their final names (a kill in between: import_copies.recover finishes it)."""
    if not items:
        return
    added, labelled, dupes, written = [], 0, [], []
    try:
        with store.transaction():
            for it in items:
                if store.is_imported(it.source):      # imported meanwhile by another window
                    dupes.append(it)
                    continue
                if it.target != it.source and store.find_image(it.target, copied=True) is not None:
                    if it.pending is None:             # the file found there was taken meanwhile
                        dupes.append(it)
                        continue
                    it.target, it.pending = copies.relocate(store, it.target, it.pending, taken)
                image_id = store.add_image(it.target, copied=it.target != it.source, width=it.width,
                                           height=it.height, split=it.split, sha1=it.sha1,
                                           thumbnail_png=it.thumb, source=it.source, stat_path=it.pending)
                added.append(image_id)
                written.append(it)
                if it.label is not None and _store_label(store, image_id, it.label, report):
                    labelled += 1
    except BaseException:
        for it in items:                               # nothing of the batch is in: drop its copies
            copies.discard(it.pending)
        raise
    for it in written:
        if it.pending is not None:
            copies.finish(it.pending, it.target)
    for it in dupes:
        copies.discard(it.pending)
        report.skipped.append((it.source, "already in the project"))
    report.added += added
    report.labelled += labelled


def _store_label(store: Store, image_id: int, label: ImageLabel, report: ImportReport) -> bool:
    """Store one imported label and its seconds, flagged estimated: the file's own seconds (never
    dropped) and, for kinds it has none for, the label cost model's (app/project/label_estimates.py)."""
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
    if wrote:
        label_estimates.record_imported(store, image_id, label, report.cost)
    return wrote


def import_folder(store: Store, folder: str | Path, *, copy: bool, split: str,
                  progress: Progress | None = None) -> ImportReport:
    folder = check_folder(folder, skip=store.folder)
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

    The layout is read by core.data.formats.mvtec: one ImageLabel per test image (masks from
    ground_truth, tag "normal" for good ones). Training images are plain normal images and get no
    label, like in MVTec AD itself. A test image whose mask cannot be used (the wrong size, not
    readable) is skipped with the reason; the rest is imported. A missing or extra mask file still
    stops the import before anything is written: the layout itself is not what it should be.
    """
    from core.data.formats.mvtec import import_labels

    category = check_mvtec(category)
    bad: list[tuple[Path, str]] = []
    labels = {Path(lab.image).resolve(): lab for lab in import_labels(category, skipped=bad)}
    unusable = {Path(p).resolve() for p, _ in bad}
    files = scan_folder(category / "train") if (category / "train").is_dir() else []
    for f in files:   # MVTec's training images are known good: say so, so the filters agree
        if f.parent.name == "good":
            labels.setdefault(f.resolve(), ImageLabel(image=f, tag="normal"))
    files += scan_folder(category / "test") if (category / "test").is_dir() else []
    known = {f.resolve() for f in files}
    files += sorted(p for p in labels if p not in known)   # anything the format found that we did not
    files = [f for f in files if f.resolve() not in unusable]   # never imported as if unlabelled
    splits = [mvtec_split(category, f) for f in files]
    report = import_files(store, files, copy=copy, split=splits, root=category, labels=labels,
                          progress=progress)
    report.skipped[:0] = [(Path(p), why) for p, why in bad]
    return report
