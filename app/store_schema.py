"""The project database's schema and its migrations.

``schema_version`` holds one row: the number of migrations applied. Each migration is a function
that runs inside one transaction, so a database is always at exactly one version. A database made
by a newer app (a higher version than we know) is refused rather than half-understood.

Add tables for later issues (models, runs) as new migrations at the end; never edit a migration
that has shipped.
"""
from __future__ import annotations

import sqlite3
from typing import Callable

LABEL_KINDS_SQL = "'mask','blocks','boxes','tag'"   # core.labels.LABEL_KINDS


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the caller's transaction.

    ``Connection.executescript`` would COMMIT first, breaking the one-transaction-per-migration
    rule, so statements are split here (our scripts have no ``;`` inside literals).
    """
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    for stmt in "\n".join(lines).split(";"):
        if stmt.strip():
            db.execute(stmt)


def _m1_initial(db: sqlite3.Connection) -> None:
    _run_script(db, f"""
    CREATE TABLE settings(
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL                       -- JSON
    );
    CREATE TABLE images(
        id        INTEGER PRIMARY KEY,
        path      TEXT NOT NULL UNIQUE,           -- relative to the project when copied, else absolute
        copied    INTEGER NOT NULL CHECK (copied IN (0, 1)),
        source    TEXT NOT NULL,                  -- the file imported (absolute): re-imports skip it
        width     INTEGER NOT NULL CHECK (width > 0),
        height    INTEGER NOT NULL CHECK (height > 0),
        split     TEXT NOT NULL DEFAULT 'train' CHECK (split IN ('train', 'test', 'val')),
        file_size INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        sha1      TEXT NOT NULL,                  -- content hash: detects a changed referenced file
        added_at  REAL NOT NULL,
        rev       INTEGER NOT NULL DEFAULT 0      -- bumped by every label write (change detection)
    );
    CREATE INDEX images_split ON images(split);
    CREATE INDEX images_source ON images(source);
    CREATE TABLE labels(
        image_id   INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        kind       TEXT NOT NULL CHECK (kind IN ({LABEL_KINDS_SQL})),
        data       TEXT,                          -- JSON (tag, boxes, blocks); NULL for a mask
        mask_png   BLOB,                          -- 1-bit PNG (255 = defect) for kind 'mask'
        n_items    INTEGER NOT NULL,              -- boxes, cells, 1 for a tag, defect px for a mask
        updated_at REAL NOT NULL,
        writer     TEXT NOT NULL,                 -- id of the window that wrote it
        PRIMARY KEY (image_id, kind),
        CHECK ((kind = 'mask') = (mask_png IS NOT NULL))
    );
    CREATE TABLE thumbnails(
        image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
        png      BLOB NOT NULL
    );
    CREATE TABLE timing(
        session    TEXT NOT NULL,                 -- one visit of one image
        image_id   INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        kind       TEXT NOT NULL CHECK (kind IN ({LABEL_KINDS_SQL})),
        seconds    REAL NOT NULL CHECK (seconds >= 0),
        started_at REAL NOT NULL,                 -- wall clock (epoch s) of opening the image
        ended_at   REAL NOT NULL,
        PRIMARY KEY (session, kind)
    );
    CREATE INDEX timing_image ON timing(image_id);
    """)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m1_initial]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    pass


def current_version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if row is None:
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(db: sqlite3.Connection) -> int:
    """Bring ``db`` (autocommit connection) up to :data:`SCHEMA_VERSION`; return the old version."""
    db.execute("BEGIN IMMEDIATE")   # two windows opening a fresh project: one migrates, one waits
    try:
        old = current_version(db)
        if old > SCHEMA_VERSION:
            raise SchemaTooNew(f"the project was written by a newer SemiREST Studio "
                               f"(schema {old}, this app knows {SCHEMA_VERSION})")
        if old == 0:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)")
            db.execute("INSERT INTO schema_version VALUES (0)")
        for version in range(old, SCHEMA_VERSION):
            MIGRATIONS[version](db)
            db.execute("UPDATE schema_version SET version = ?", (version + 1,))
        db.execute("COMMIT")
        return old
    except BaseException:
        db.execute("ROLLBACK")
        raise
