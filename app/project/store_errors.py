"""Plain words for a project that cannot be written: a full disk, a read-only folder, a database
another program keeps locked.

SQLite and the OS say these in their own terms ("database or disk is full", "attempt to write a
readonly database", "[Errno 28] No space left on device"); the user is told what it means, and the
caller names the file or folder at fault. No Qt, no Store: the store, the importer and the
headless entry all use these.
"""
from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

# errno -> what it means for a place we write to (None from os_problem: not the place's fault)
_PLACE_ERRNOS = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "the folder is read-only (no permission to write there)",
    errno.EPERM: "the folder is read-only (no permission to write there)",
}


def os_problem(exc: OSError) -> str | None:
    """What a write's OSError says about the place written to, or None when it is not about the
    place (a source file that vanished, a bad name): then the caller reports it per file."""
    return _PLACE_ERRNOS.get(exc.errno)


def db_problem(exc: sqlite3.Error, busy_timeout_s: float) -> str:
    """A SQLite error in plain words (the message SQLite gives, when none of these fits)."""
    text = str(exc).lower()
    if "full" in text:                                      # SQLITE_FULL: "database or disk is full"
        return "no space left on the disk"
    if "readonly" in text or "read-only" in text:           # SQLITE_READONLY
        return "the project is read-only"
    if "locked" in text or "busy" in text:                  # SQLITE_BUSY after busy_timeout
        return (f"another program has kept the project database locked for more than "
                f"{busy_timeout_s:g} s (another SemiREST Studio busy with a long write?); try again")
    if "disk i/o" in text:                                  # SQLITE_IOERR: often a full or failing disk
        return "a disk input/output error (is the disk full, failing or unplugged?)"
    return str(exc)


def read_only_part(folder: Path, db_path: Path) -> Path | None:
    """The project folder or database file when this process cannot write it, else None.

    ``os.access`` answers for this user (root too, on a read-only mount). SQLite needs to write the
    folder as well as the file: WAL keeps its ``-wal`` and ``-shm`` files beside the database.
    """
    if folder.is_dir() and not os.access(folder, os.W_OK):
        return folder
    if db_path.exists() and not os.access(db_path, os.W_OK):
        return db_path
    return None
