"""The project database's schema and its migrations.

``schema_version`` holds one row: the number of migrations applied. Each migration is a function
that runs inside one transaction, so a database is always at exactly one version. A database made
by a newer app (a higher version than we know) is refused rather than half-understood.

Add tables for later issues as new migrations at the end; never edit a migration that has shipped.
A migration that rebuilds a table (SQLite cannot change a CHECK in place) runs with foreign keys
off, as SQLite's documented 12-step procedure requires, and checks them before committing.
"""
from __future__ import annotations

import sqlite3
from typing import Callable

LABEL_KINDS_SQL = "'mask','blocks','boxes','tag'"   # core.data.labels.LABEL_KINDS


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


_IMAGES_V2 = """
    CREATE TABLE images_v2(
        id        INTEGER PRIMARY KEY,
        path      TEXT NOT NULL UNIQUE,
        copied    INTEGER NOT NULL CHECK (copied IN (0, 1)),
        source    TEXT NOT NULL,
        width     INTEGER NOT NULL CHECK (width > 0),
        height    INTEGER NOT NULL CHECK (height > 0),
        split     TEXT NOT NULL DEFAULT 'train' CHECK (split IN ('train', 'test', 'val', 'inspect')),
        file_size INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        sha1      TEXT NOT NULL,
        added_at  REAL NOT NULL,
        rev       INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO images_v2 SELECT id, path, copied, source, width, height, split, file_size, mtime_ns,
                                 sha1, added_at, rev FROM images;
    DROP TABLE images;
    ALTER TABLE images_v2 RENAME TO images;
    CREATE INDEX images_split ON images(split);
    CREATE INDEX images_source ON images(source);
"""


def _m2_runs_models_predictions(db: sqlite3.Connection) -> None:
    """Issue 5: training runs, trained models, cached predictions; the 'inspect' split (parts
    from a folder run through a model for review: never training normals, their labels are)."""
    _run_script(db, _IMAGES_V2 + """
    CREATE TABLE runs(
        id            INTEGER PRIMARY KEY,
        status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'cancelled', 'failed', 'finished')),
        settings      TEXT NOT NULL,              -- JSON: supervision, preset, backbone, device, steps...
        command       TEXT NOT NULL,              -- JSON argv after the Python executable
        run_dir       TEXT NOT NULL,              -- relative to the project
        labels_used   TEXT NOT NULL,              -- JSON {kind: images}
        label_seconds TEXT NOT NULL,              -- JSON {kind: annotation seconds}
        parent_model  INTEGER REFERENCES models(id) ON DELETE SET NULL,   -- retrained from
        created       REAL NOT NULL,
        started       REAL,
        ended         REAL,
        pid           INTEGER,
        exit_code     INTEGER,
        error         TEXT,
        log_path      TEXT                        -- relative to the project
    );
    CREATE TABLE models(
        id              INTEGER PRIMARY KEY,
        run_id          INTEGER REFERENCES runs(id) ON DELETE SET NULL,
        path            TEXT NOT NULL,            -- relative to the project (or absolute)
        created         REAL NOT NULL,
        supervision     TEXT NOT NULL,
        preset          TEXT,
        backbone        TEXT,
        device          TEXT,
        device_name     TEXT,
        train_seconds   REAL,
        steps           INTEGER,
        labels_used     TEXT NOT NULL,            -- JSON {kind: images}
        label_seconds   TEXT NOT NULL,            -- JSON {kind: seconds}
        validation      TEXT NOT NULL,            -- JSON {val_pixel_ap, step, history}
        calibration     TEXT NOT NULL,            -- JSON (map_scale, default thresholds, score lists)
        image_threshold REAL,                     -- the user's; NULL = the calibration's
        pixel_threshold REAL
    );
    CREATE TABLE predictions(
        model_id  INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        image_id  INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        score     REAL NOT NULL,
        block_map BLOB NOT NULL,                  -- .npy bytes, float16 (rows, cols)
        created   REAL NOT NULL,
        PRIMARY KEY (model_id, image_id)
    );
    CREATE INDEX predictions_image ON predictions(image_id);
    """)


TIMING_KINDS_SQL = LABEL_KINDS_SQL + ",'checked'"        # app.labeling.timing.TIMING_KINDS


def _m3_timing_estimated_checked(db: sqlite3.Connection) -> None:
    """Timing that means what it says (docs/decisions/0003-annotation-timing.md): the kind
    'checked' (time spent judging an image, booked when the user gives a verdict, which is kept in
    ``verdict``) and the flag ``estimated`` (seeded or imported seconds, not measured here).

    Rows already stored count as measured, except the demo's seeded rows (sessions ``demo-*``,
    which no measured visit uses: those are uuid hex), which were always illustrative."""
    _run_script(db, f"""
    CREATE TABLE timing_v3(
        session    TEXT NOT NULL,
        image_id   INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        kind       TEXT NOT NULL CHECK (kind IN ({TIMING_KINDS_SQL})),
        seconds    REAL NOT NULL CHECK (seconds >= 0),
        started_at REAL NOT NULL,
        ended_at   REAL NOT NULL,
        estimated  INTEGER NOT NULL DEFAULT 0 CHECK (estimated IN (0, 1)),   -- 1: seeded/imported
        verdict    TEXT CHECK (verdict IN ('normal', 'defective')),          -- kind 'checked' only
        PRIMARY KEY (session, kind),
        CHECK (verdict IS NULL OR kind = 'checked')
    );
    INSERT INTO timing_v3(session, image_id, kind, seconds, started_at, ended_at, estimated)
        SELECT session, image_id, kind, seconds, started_at, ended_at,
               CASE WHEN session LIKE 'demo-%' THEN 1 ELSE 0 END FROM timing;
    DROP TABLE timing;
    ALTER TABLE timing_v3 RENAME TO timing;
    CREATE INDEX timing_image ON timing(image_id);
    """)


def _m4_label_seconds_estimated(db: sqlite3.Connection) -> None:
    """How much of a run's and a model's label seconds were estimated (seeded or imported), per kind
    (docs/decisions/0003-annotation-timing.md). ``label_seconds`` keeps the total; rows stored
    before read ``{}``: all measured (we cannot know better)."""
    _run_script(db, """
    ALTER TABLE runs ADD COLUMN label_seconds_estimated TEXT NOT NULL DEFAULT '{}';    -- JSON {kind: s}
    ALTER TABLE models ADD COLUMN label_seconds_estimated TEXT NOT NULL DEFAULT '{}'
    """)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m1_initial, _m2_runs_models_predictions,
                                                          _m3_timing_estimated_checked,
                                                          _m4_label_seconds_estimated]
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
    fk = int(db.execute("PRAGMA foreign_keys").fetchone()[0])
    db.execute("PRAGMA foreign_keys = OFF")   # table rebuilds must not cascade (no-op in a transaction)
    try:
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
            bad = db.execute("PRAGMA foreign_key_check").fetchall()
            if bad:
                raise sqlite3.IntegrityError(f"migration left {len(bad)} broken references, e.g. {bad[0]}")
            db.execute("COMMIT")
            return old
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.execute(f"PRAGMA foreign_keys = {'ON' if fk else 'OFF'}")
