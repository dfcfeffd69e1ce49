"""Copies of imported images that a kill at any moment cannot leave orphaned. No Qt.

A copy gets its final name in ``images/`` only after its image row is committed:

1. :func:`reserve` picks the final name: no file there, no row for it, not taken earlier in this
   import. A file already there under that name with no row and the same content is what an
   import killed by an older version left: it is taken over, not copied again beside it.
2. :func:`copy_pending` copies the file to a hidden pending file beside the final name,
   ``.<final name>.<pid>-<token>.import.tmp``, and fsyncs it.
3. The importer commits the row (its path is the final name), then :func:`finish` renames.

A kill before the commit leaves a pending file without a row; a kill between the commit and the
rename leaves a row whose file is missing, beside its pending file. :func:`recover` (before every
import, and when the window opens a project) removes the first and finishes the second, so a
rerun finds every copy once, under its own name: no orphans, no ``name-1.png`` beside ``name.png``.
Pending files of a live process (another window importing now) are left alone: the pid in the
name tells. Two imports that pick the same free name meet at the write: the row's path is UNIQUE
and written under the write lock, so the second one moves to the next free name (:func:`relocate`).
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

from core.fileio import writer_may_be_alive

from .store import IMAGES_DIR, Store, file_sha1

PENDING_SUFFIX = ".import.tmp"
_PENDING = re.compile(r"^\.(?P<final>.+)\.(?P<pid>\d+)-[0-9a-f]{8}" + re.escape(PENDING_SUFFIX) + "$")
# Hidden .tmp files in images/ without a pid (older versions' atomic copies): nobody can still be
# writing one after this long.
STALE_S = 3600.0


def pending_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{PENDING_SUFFIX}")


def _free(store: Store, path: Path, taken: set[Path]) -> bool:
    return path not in taken and not path.exists() and store.find_image(path, copied=True) is None


def reserve(store: Store, want: Path, sha1: str, taken: set[Path]) -> tuple[Path, bool]:
    """The final name for a copy of a file with content ``sha1`` wanted at ``want``, and whether
    a file with that content is there already (left by a killed import; no row refers to it)."""
    path, n = want, 1
    while True:
        if path not in taken and store.find_image(path, copied=True) is None:
            if not path.exists():
                break
            if path.is_file() and file_sha1(path) == sha1:
                taken.add(path)
                return path, True
        path = want.with_name(f"{want.stem}-{n}{want.suffix}")
        n += 1
    taken.add(path)
    return path, False


def copy_pending(src: Path, final: Path) -> Path:
    """Copy ``src`` to a pending file for ``final``; it is whole on disk when this returns."""
    pending = pending_path(final)
    try:
        pending.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, pending)        # a new file: the umask's mode, like any copy
        with open(pending, "rb+") as fh:     # on disk before its row commits (a power cut too)
            os.fsync(fh.fileno())
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    return pending


def relocate(store: Store, final: Path, pending: Path, taken: set[Path]) -> tuple[Path, Path]:
    """Another import committed a row for ``final`` meanwhile: the next free name, and the
    pending file renamed to claim it. Called inside the write transaction (no one else can
    commit a row meanwhile)."""
    n, new = 1, final
    while not _free(store, new, taken):
        new = final.with_name(f"{final.stem}-{n}{final.suffix}")
        n += 1
    taken.add(new)
    moved = pending_path(new)
    os.replace(pending, moved)
    return new, moved


def finish(pending: Path, final: Path) -> bool:
    """Give a committed copy its final name; False if that failed (:func:`recover` retries)."""
    try:
        os.replace(pending, final)
    except OSError:
        return False
    return True


def discard(pending: Path | None) -> None:
    if pending is not None:
        pending.unlink(missing_ok=True)


def recover(store: Store) -> tuple[int, int]:
    """Finish or remove what killed imports left in ``images/``: (finished, removed)."""
    root = store.folder / IMAGES_DIR
    finished = removed = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:
                continue                 # gone meanwhile (its own import renamed it)
            m = _PENDING.match(name)
            if m is None:
                if time.time() - st.st_mtime > STALE_S:
                    path.unlink(missing_ok=True)
                    removed += 1
                continue
            if writer_may_be_alive(int(m["pid"]), st.st_mtime, STALE_S):
                continue
            final = path.with_name(m["final"])
            image_id = store.find_image(final, copied=True)
            if (image_id is not None and not final.exists()
                    and store.image(image_id).file_size == st.st_size and finish(path, final)):
                finished += 1            # committed, killed before the rename
            else:
                path.unlink(missing_ok=True)
                removed += 1             # killed before its row was committed
    return finished, removed
