"""The project store: a folder holding ``project.sqlite`` (WAL) and the copied-in images.

Durability (docs/decisions/0001-project-store.md): every label edit is one short ``BEGIN
IMMEDIATE`` transaction committed at once, with ``synchronous=FULL``, so a kill of the app (or a
power cut) loses at most the stroke still under the mouse. Masks are 1-bit PNG blobs in the same
row as their metadata, so a label and its mask can never disagree after a crash.

Concurrency: several windows or processes may open one project. WAL lets readers and one writer
proceed together; ``busy_timeout`` makes a second writer wait instead of failing. Conflicts are
"last writer wins per image and label kind": each (image, kind) is one row, replaced whole. Every
write bumps the image's ``rev``; a window polls :meth:`Store.data_version` and reloads an image
another writer changed (see ``app/labeling/controller.py``).

A Store object belongs to one thread (sqlite3's rule); background workers open their own.
Empty labels are not stored: no tag, no boxes, no cells, or an all-clear mask deletes the row, so
"has a row" means "has a label" and the image-list filters are plain SQL.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from core.data.labels import BlockCells, ImageLabel, RotatedBox, save_label

from ..settings import SPLITS, ProjectSettings
from .store_errors import db_problem, os_problem, read_only_part
from .runs import Runs
from .schema import SchemaTooNew, migrate

PROJECT_DB = "project.sqlite"
IMAGES_DIR = "images"
LABELS_DIR = "labels"
BUSY_TIMEOUT_S = 10.0
STATUSES = ("unlabelled", "normal", "defective")


class StoreError(Exception):
    """The project cannot be opened or written; the message says which file and why."""


@dataclass(frozen=True)
class ImageRow:
    id: int
    path: str           # as stored: relative (copied in) or absolute (referenced)
    copied: bool
    width: int
    height: int
    split: str
    file_size: int
    mtime_ns: int
    sha1: str
    rev: int
    abs_path: Path
    status: str = "unlabelled"

    @property
    def name(self) -> str:
        return self.abs_path.name


@dataclass
class LabelRecord:
    """One image's labels as stored; the mask stays encoded (decode off the GUI thread)."""

    image_id: int
    rev: int
    tag: str | None = None
    boxes: list[RotatedBox] = field(default_factory=list)
    blocks: BlockCells | None = None
    mask_png: bytes | None = None
    writers: dict[str, str] = field(default_factory=dict)   # kind -> writer id


def encode_mask(mask: np.ndarray) -> bytes:
    """A 1-bit PNG (255 = defect): 15 ms and ~30 kB for a 4000 x 4000 mask."""
    m = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
    ok, buf = cv2.imencode(".png", m, [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:   # pragma: no cover - only on impossible shapes
        raise StoreError("cannot encode mask as PNG")
    return buf.tobytes()


def decode_mask(png: bytes) -> np.ndarray:
    """uint8 (H, W) mask, 1 = defect."""
    arr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise StoreError("a stored mask is not a valid PNG")
    return (arr > 0).astype(np.uint8)


def file_sha1(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class Store:
    """One connection to one project. Use :meth:`create` or :meth:`open`."""

    def __init__(self, folder: str | Path, _create: bool = False):
        self.folder = Path(folder).resolve()
        self.db_path = self.folder / PROJECT_DB
        if not _create and not self.db_path.exists():
            raise StoreError(f"{self.folder}: not a SemiREST Studio project (no {PROJECT_DB})")
        self.writer_id = uuid.uuid4().hex[:12]
        self._depth = 0
        self.db = None
        self.runs = Runs(self)           # runs, models and predictions (app/project/runs.py)
        doing = f"cannot create the project at {self.folder}" if _create else str(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{doing}: {os_problem(exc) or exc.strerror or exc}") from exc
        # Refused up front, in plain words: SQLite would only say "not a usable database" or
        # "attempt to write a readonly database" at the first write. The app writes to its project
        # all the time (labels, timing), so a read-only project cannot be worked on as it is.
        locked = read_only_part(self.folder, self.db_path)
        if locked is not None:
            raise StoreError(f"{doing}: the folder is read-only" if _create else
                             f"{self.folder}: the project is read-only ({locked} cannot be written); "
                             f"make it writable, or copy the project folder to a writable place")
        try:
            self.db = sqlite3.connect(str(self.db_path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self.db.execute("PRAGMA foreign_keys = ON")
            # WAL: readers never block the writer, and a kill leaves a consistent database.
            mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.db_path}: cannot switch to WAL mode (file system? got {mode})")
            # FULL: each commit is fsynced, so even a power cut keeps every finished edit. Edits are
            # human-paced (a few per second at most), so the fsync costs nothing a user can see.
            self.db.execute("PRAGMA synchronous = FULL")
            migrate(self.db)
        except SchemaTooNew as exc:
            raise StoreError(f"{self.db_path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            self.close()
            if isinstance(exc, sqlite3.OperationalError):   # full, read-only, locked: not the file's fault
                raise StoreError(f"{doing if _create else self.db_path}: "
                                 f"{db_problem(exc, BUSY_TIMEOUT_S)}") from exc
            raise StoreError(f"{self.db_path}: not a usable project database ({exc})") from exc

    # ---- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | Path, settings: ProjectSettings | None = None) -> "Store":
        folder = Path(folder)
        if (folder / PROJECT_DB).exists():
            raise StoreError(f"{folder}: already holds a project")
        if folder.exists() and not folder.is_dir():
            raise StoreError(f"{folder}: is a file, not a folder")
        store = cls(folder, _create=True)
        store.set_settings(settings or ProjectSettings())
        return store

    @classmethod
    def open(cls, folder: str | Path) -> "Store":
        return cls(folder)

    @staticmethod
    def is_project(folder: str | Path) -> bool:
        return (Path(folder) / PROJECT_DB).is_file()

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested uses join the outer one (import batches)."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._depth = 0
            # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): a second ROLLBACK
            # would raise "no transaction is active" and hide the error that says what happened.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    def commit_point(self) -> None:
        """Inside the outermost :meth:`transaction`: commit what is done and go on in a new one
        (long imports commit in batches so a kill keeps them and other windows see progress)."""
        if self._depth == 1:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN IMMEDIATE")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one consistent state, without a write lock."""
        if self._depth:
            yield self.db
            return
        self.db.execute("BEGIN")
        self._depth = 1
        try:
            yield self.db
        finally:
            self._depth = 0
            self.db.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever *another* connection commits (SQLite's PRAGMA data_version)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    # ---- settings -----------------------------------------------------------------------------
    def settings(self) -> ProjectSettings:
        d = {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM settings")}
        return ProjectSettings.from_dict(d)

    def set_settings(self, s: ProjectSettings) -> None:
        s.validate()
        with self.transaction() as db:
            for k, v in s.as_dict().items():
                db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (k, json.dumps(v)))

    # ---- images -------------------------------------------------------------------------------
    def stored_path(self, path: Path, copied: bool) -> str:
        path = Path(path)
        if copied:
            return Path(os.path.relpath(path.resolve(), self.folder)).as_posix()
        return str(path.resolve())

    def resolve(self, stored: str, copied: bool) -> Path:
        return self.folder / stored if copied else Path(stored)

    def add_image(self, path: Path, *, copied: bool, width: int, height: int, split: str,
                  sha1: str, thumbnail_png: bytes | None = None, source: Path | None = None,
                  stat_path: Path | None = None) -> int:
        """Add an image; ``source`` is the file it was copied from (default: ``path`` itself);
        ``stat_path`` the file to take size and mtime from, when a copy still has its pending name
        (it gets ``path`` only after this row commits: app/project/import_copies.py)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        st = Path(stat_path or path).stat()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO images(path, copied, source, width, height, split, file_size, mtime_ns,"
                " sha1, added_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (self.stored_path(path, copied), int(copied), str(Path(source or path).resolve()),
                 int(width), int(height), split, st.st_size, st.st_mtime_ns, sha1, time.time()))
            image_id = int(cur.lastrowid)
            if thumbnail_png is not None:
                db.execute("INSERT INTO thumbnails VALUES (?, ?)", (image_id, thumbnail_png))
        return image_id

    _IMAGE_SQL = ("SELECT i.id, i.path, i.copied, i.width, i.height, i.split, i.file_size, "
                  "i.mtime_ns, i.sha1, i.rev, "
                  "(SELECT count(*) FROM labels l WHERE l.image_id = i.id AND l.kind != 'tag'), "
                  "(SELECT data FROM labels l WHERE l.image_id = i.id AND l.kind = 'tag') "
                  "FROM images i")

    def _row(self, r: Sequence) -> ImageRow:
        shapes, tag = r[10], (json.loads(r[11]) if r[11] else None)
        status = "defective" if shapes or tag == "defective" else ("normal" if tag == "normal" else "unlabelled")
        return ImageRow(int(r[0]), r[1], bool(r[2]), int(r[3]), int(r[4]), r[5], int(r[6]), int(r[7]),
                        r[8], int(r[9]), self.resolve(r[1], bool(r[2])), status)

    def images(self, split: str | None = None, status: str | None = None) -> list[ImageRow]:
        """Images in import order, optionally only one split and/or one status."""
        sql, args = self._IMAGE_SQL, []
        if split is not None:
            sql += " WHERE i.split = ?"
            args.append(split)
        rows = [self._row(r) for r in self.db.execute(sql + " ORDER BY i.id", args)]
        return [r for r in rows if status is None or r.status == status]

    def image(self, image_id: int) -> ImageRow:
        r = self.db.execute(self._IMAGE_SQL + " WHERE i.id = ?", (image_id,)).fetchone()
        if r is None:
            raise StoreError(f"image {image_id} is not in the project")
        return self._row(r)

    def image_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM images").fetchone()[0])

    def find_image(self, path: Path, copied: bool = False) -> int | None:
        r = self.db.execute("SELECT id FROM images WHERE path = ?",
                            (self.stored_path(path, copied),)).fetchone()
        return None if r is None else int(r[0])

    def is_imported(self, source: Path) -> bool:
        """Was this file imported already (copied in or referenced)?"""
        return self.db.execute("SELECT 1 FROM images WHERE source = ? LIMIT 1",
                               (str(Path(source).resolve()),)).fetchone() is not None

    def set_split(self, image_ids: Iterable[int], split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        with self.transaction() as db:
            db.executemany("UPDATE images SET split = ? WHERE id = ?", [(split, i) for i in image_ids])

    def remove_images(self, image_ids: Iterable[int]) -> None:
        """Forget images (and their labels); copies inside the project are deleted too."""
        rows = [self.image(i) for i in image_ids]
        with self.transaction() as db:
            db.executemany("DELETE FROM images WHERE id = ?", [(r.id,) for r in rows])
        for r in rows:   # after the commit: a kill in between leaves a stray file, not a lost label
            if r.copied:
                r.abs_path.unlink(missing_ok=True)

    def file_state(self, row: ImageRow) -> str:
        """'ok', 'missing' or 'changed' (the file's content differs from what was imported)."""
        try:
            st = row.abs_path.stat()
        except OSError:
            return "missing"
        if st.st_size == row.file_size and st.st_mtime_ns == row.mtime_ns:
            return "ok"
        if st.st_size == row.file_size and file_sha1(row.abs_path) == row.sha1:
            with self.transaction() as db:   # touched, not changed: remember the new mtime
                db.execute("UPDATE images SET mtime_ns = ? WHERE id = ?", (st.st_mtime_ns, row.id))
            return "ok"
        return "changed"

    def thumbnail(self, image_id: int) -> bytes | None:
        r = self.db.execute("SELECT png FROM thumbnails WHERE image_id = ?", (image_id,)).fetchone()
        return None if r is None else bytes(r[0])

    def set_thumbnail(self, image_id: int, png: bytes) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO thumbnails VALUES (?, ?)", (image_id, png))

    # ---- labels -------------------------------------------------------------------------------
    def _write_label(self, image_id: int, kind: str, data: object | None, mask_png: bytes | None,
                     n_items: int) -> int:
        with self.transaction() as db:
            if n_items <= 0:
                db.execute("DELETE FROM labels WHERE image_id = ? AND kind = ?", (image_id, kind))
            else:
                db.execute("INSERT OR REPLACE INTO labels VALUES (?,?,?,?,?,?,?)",
                           (image_id, kind, None if data is None else json.dumps(data), mask_png,
                            int(n_items), time.time(), self.writer_id))
            r = db.execute("UPDATE images SET rev = rev + 1 WHERE id = ? RETURNING rev",
                           (image_id,)).fetchone()
            if r is None:
                raise StoreError(f"image {image_id} is not in the project (removed by another window?)")
        return int(r[0])

    def _check_label(self, image_id: int, **parts) -> None:
        """Refuse, before anything is written, a label that training would refuse later: the
        core's own rules (ImageLabel.validate) against this image's size, so the store and the
        label files have one rule set. Raises core.errors.LabelError naming the image."""
        row = self.image(image_id)
        ImageLabel(image=row.abs_path, width=row.width, height=row.height, **parts).validate()

    # Each save_* stores one label kind of one image, or raises (LabelError: invalid for this
    # image; StoreError: no such image) and stores nothing.
    def save_tag(self, image_id: int, tag: str | None) -> int:
        self._check_label(image_id, tag=tag)
        return self._write_label(image_id, "tag", tag, None, 0 if tag is None else 1)

    def save_boxes(self, image_id: int, boxes: Sequence[RotatedBox]) -> int:
        boxes = list(boxes)
        self._check_label(image_id, boxes=boxes)
        return self._write_label(image_id, "boxes", [b.as_dict() for b in boxes], None, len(boxes))

    def save_blocks(self, image_id: int, blocks: BlockCells | None) -> int:
        self._check_label(image_id, blocks=blocks)
        n = 0 if blocks is None else len(blocks.cells)
        return self._write_label(image_id, "blocks", None if blocks is None else blocks.as_dict(), None, n)

    def save_mask(self, image_id: int, mask: np.ndarray | None, png: bytes | None = None) -> int:
        """Store a mask (None or all-clear deletes it). ``png`` may be given pre-encoded."""
        if mask is not None:
            self._check_label(image_id, mask=np.asarray(mask))
        n = 0 if mask is None else int(np.count_nonzero(mask))
        if n and png is None:
            png = encode_mask(mask)
        return self._write_label(image_id, "mask", None, png if n else None, n)

    def image_rev(self, image_id: int) -> int:
        r = self.db.execute("SELECT rev FROM images WHERE id = ?", (image_id,)).fetchone()
        return -1 if r is None else int(r[0])

    def label_record(self, image_id: int) -> LabelRecord:
        with self.snapshot():   # rev and rows from one consistent state
            rec = LabelRecord(image_id, self.image_rev(image_id))
            for kind, data, png, writer in self.db.execute(
                    "SELECT kind, data, mask_png, writer FROM labels WHERE image_id = ?", (image_id,)):
                rec.writers[kind] = writer
                if kind == "tag":
                    rec.tag = json.loads(data)
                elif kind == "boxes":
                    rec.boxes = [RotatedBox.from_dict(d) for d in json.loads(data)]
                elif kind == "blocks":
                    d = json.loads(data)
                    rec.blocks = BlockCells(int(d["image_size"]), int(d["block"]),
                                            [(int(r), int(c)) for r, c in d["cells"]])
                elif kind == "mask":
                    rec.mask_png = bytes(png)
        return rec

    def label_counts(self, image_id: int) -> dict[str, int]:
        return {k: int(n) for k, n in self.db.execute(
            "SELECT kind, n_items FROM labels WHERE image_id = ?", (image_id,))}

    def image_label(self, image_id: int, with_seconds: bool = True) -> ImageLabel:
        """The core's ImageLabel of one image (absolute image path, decoded mask)."""
        row, rec = self.image(image_id), self.label_record(image_id)
        mask = None if rec.mask_png is None else decode_mask(rec.mask_png).astype(bool)
        seconds = self.seconds_by_kind(image_id) if with_seconds else {}
        estimated = self.seconds_by_kind(image_id, estimated_only=True) if with_seconds else {}
        return ImageLabel(image=row.abs_path, width=row.width, height=row.height, tag=rec.tag,
                          boxes=list(rec.boxes), mask=mask, blocks=rec.blocks, seconds=seconds,
                          seconds_estimated=estimated)

    def labelled_image_ids(self) -> list[int]:
        return [int(r[0]) for r in self.db.execute(
            "SELECT DISTINCT image_id FROM labels ORDER BY image_id")]

    def labels_for_training(self, split: str | None = None, labelled_only: bool = True) -> list[ImageLabel]:
        """One core ImageLabel per image (labelled ones only by default), in import order.

        This is what training consumes; ``seconds`` carries the annotation time, measured and
        estimated together, ``seconds_estimated`` the estimated part (the label files keep both).
        """
        labelled = set(self.labelled_image_ids())
        return [self.image_label(r.id) for r in self.images(split)
                if not labelled_only or r.id in labelled]

    def write_label_files(self, out_dir: str | Path | None = None, split: str | None = None) -> list[Path]:
        """Write the core's per-image JSON (and mask PNG) for every labelled image."""
        out_dir = Path(out_dir) if out_dir is not None else self.folder / LABELS_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        written, used = [], set()
        for label in self.labels_for_training(split):
            stem = Path(label.image).stem
            name = stem if stem not in used else f"{stem}-{len(used)}"
            while name in used:
                name += "_"
            used.add(name)
            written.append(save_label(label, out_dir / f"{name}.json"))
        return written

    # ---- timing -------------------------------------------------------------------------------
    def save_timing(self, session: str, image_id: int, seconds: dict[str, float],
                    started_at: float, ended_at: float, estimated: bool = False,
                    verdict: str | None = None) -> None:
        """Replace the rows of one visit (called repeatedly while the image stays open).

        ``estimated``: the seconds were seeded or imported, not measured in this project (the
        exports keep them apart). ``verdict``: the tag the user gave, stored on the 'checked' row.
        """
        with self.transaction() as db:
            db.execute("DELETE FROM timing WHERE session = ?", (session,))
            db.executemany("INSERT INTO timing VALUES (?,?,?,?,?,?,?,?)",
                           [(session, image_id, k, float(s), started_at, ended_at, int(bool(estimated)),
                             verdict if k == "checked" else None)
                            for k, s in seconds.items() if s > 0])

    def seconds_by_kind(self, image_id: int, estimated_only: bool = False) -> dict[str, float]:
        """Seconds per kind, measured and estimated together (what training and label files carry);
        ``estimated_only``: the estimated (seeded or imported) part alone, kinds without any absent."""
        return {k: float(s) for k, s in self.db.execute(
            "SELECT kind, sum(seconds) FROM timing WHERE image_id = ? AND estimated >= ? GROUP BY kind",
            (image_id, int(estimated_only)))}

    def timing_totals(self) -> list[tuple[int, str, bool, float, str | None]]:
        """(image_id, kind, estimated, seconds, verdict) summed over visits, ordered by image;
        measured and estimated seconds are separate rows; ``verdict`` is the latest visit's."""
        return [(int(i), k, bool(e), float(s), v) for i, k, e, s, v in self.db.execute(
            "SELECT image_id, kind, estimated, sum(seconds), "
            "       (SELECT t2.verdict FROM timing t2 WHERE t2.image_id = t.image_id AND t2.kind = t.kind "
            "        AND t2.estimated = t.estimated ORDER BY t2.ended_at DESC, t2.rowid DESC LIMIT 1) "
            "FROM timing t GROUP BY image_id, kind, estimated ORDER BY image_id, kind, estimated")]
