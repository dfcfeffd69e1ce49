"""A project database as an older version of the app left it, for migration tests."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from app.project.schema import MIGRATIONS


def old_project_db(folder: Path, version: int, wal: bool = False) -> sqlite3.Connection:
    """``folder/project.sqlite`` at schema ``version`` (its first ``version`` migrations), left in
    an open transaction: insert the old rows, then COMMIT and close."""
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(folder / "project.sqlite"), isolation_level=None)
    if wal:
        db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    db.execute("CREATE TABLE schema_version(version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (?)", (version,))
    for migrate in MIGRATIONS[:version]:
        migrate(db)
    return db
