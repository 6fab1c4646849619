"""The tables of the store file, how a connection to it is set up, and how older files are migrated.

Tables (schema version :data:`SCHEMA_VERSION`):

* ``instances`` — one row per pool instance (COCO annotation id), its xyxy box in original-image pixels,
  the image size and the split it belongs to. Crowd regions are never stored: nobody is asked about them.
* ``points`` — every yes/no answer: the integer pixel ``(x, y) = (column, row)`` of the original image,
  ``label`` 1 when the pixel is on the object, the step that asked, the strategy that chose it, who
  answered and when (unix seconds). A pixel is answered at most once per instance.
* ``phases`` — completed phases of the active loop with a json payload, so a killed run resumes where
  it stopped.
* ``meta`` — key/value pairs, among them the schema version.
* ``query_steps`` and ``queries`` (since version 2) — questions put to people: a selection step posts one
  open query per chosen (instance, pixel) with its next-best pixels (``alternates``); an answer stores a
  point and closes the query in one transaction; "can't tell" closes it as ``skipped`` and posts the next
  alternate of the same instance as a new query (``replaces`` = the skipped one). A step is *consumed*
  once the loop has taken its answers; after that nothing of it can be undone.
* ``reviews`` (since version 3) — people's decisions about exported masks (accept, reject, skip), with
  the mask they saw; see :mod:`apis.store.reviews`.
* ``box_images``, ``boxes`` and ``box_ops`` (since version 4) — a project started from images alone: its
  images (done or not, by whom), the boxes people draw on them (xyxy floats in shown-image pixels) and every
  box operation with the client's own id; see :mod:`apis.store.boxes`.

Older files are migrated in place when opened (the new tables are added; nothing else changes).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from apis.store.errors import StoreError

SCHEMA_VERSION = 4
DB_NAME = "apis.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id          INTEGER PRIMARY KEY,
    image_id    INTEGER NOT NULL,
    category_id INTEGER NOT NULL,
    x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    split       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_split ON instances(split);
CREATE TABLE IF NOT EXISTS points (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    step        INTEGER NOT NULL CHECK (step >= 0),
    x           INTEGER NOT NULL,
    y           INTEGER NOT NULL,
    label       INTEGER NOT NULL CHECK (label IN (0, 1)),
    strategy    TEXT NOT NULL,
    annotator   TEXT NOT NULL,
    answered_at REAL NOT NULL,
    UNIQUE (instance_id, x, y)
);
CREATE INDEX IF NOT EXISTS points_step ON points(step);
CREATE TABLE IF NOT EXISTS phases (
    name         TEXT PRIMARY KEY,
    completed_at REAL NOT NULL,
    payload      TEXT NOT NULL
);
"""

# Schema changes after version 1, applied in order: version → statements that bring version − 1 to it.
_MIGRATIONS: dict[int, str] = {
    2: """
CREATE TABLE IF NOT EXISTS query_steps (
    step        INTEGER PRIMARY KEY CHECK (step >= 0),
    strategy    TEXT NOT NULL,
    posted_at   REAL NOT NULL,
    consumed_at REAL,
    phase       TEXT
);
CREATE TABLE IF NOT EXISTS queries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    step        INTEGER NOT NULL REFERENCES query_steps(step),
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    x           INTEGER NOT NULL,
    y           INTEGER NOT NULL,
    alternates  TEXT NOT NULL,
    replaces    INTEGER REFERENCES queries(id),
    state       TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'answered', 'skipped')),
    point_id    INTEGER REFERENCES points(id),
    annotator   TEXT,
    closed_at   REAL,
    closed_seq  INTEGER UNIQUE,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queries_state ON queries(state, id);
CREATE INDEX IF NOT EXISTS queries_step ON queries(step, state);
CREATE INDEX IF NOT EXISTS queries_replaces ON queries(replaces);
CREATE INDEX IF NOT EXISTS queries_annotator ON queries(annotator, closed_seq);
CREATE INDEX IF NOT EXISTS queries_closed ON queries(closed_at);
""",
    3: """
CREATE TABLE IF NOT EXISTS reviews (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    step        INTEGER NOT NULL CHECK (step >= 0),
    decision    TEXT NOT NULL CHECK (decision IN ('accept', 'reject', 'skip')),
    reviewer    TEXT NOT NULL,
    mask        TEXT NOT NULL,
    mask_sha1   TEXT NOT NULL,
    apis_score  REAL,
    decided_at  REAL NOT NULL,
    undone_at   REAL
);
CREATE INDEX IF NOT EXISTS reviews_instance ON reviews(instance_id, id);
CREATE INDEX IF NOT EXISTS reviews_reviewer ON reviews(reviewer, id);
""",
    4: """
CREATE TABLE IF NOT EXISTS box_images (
    image_id  INTEGER PRIMARY KEY,
    file_name TEXT NOT NULL,
    width     INTEGER NOT NULL CHECK (width > 0),
    height    INTEGER NOT NULL CHECK (height > 0),
    done_by   TEXT,
    done_at   REAL
);
CREATE TABLE IF NOT EXISTS boxes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id    INTEGER NOT NULL REFERENCES box_images(image_id),
    category_id INTEGER NOT NULL,
    x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    annotator   TEXT NOT NULL,
    drawn_at    REAL NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX IF NOT EXISTS boxes_image ON boxes(image_id, deleted);
CREATE TABLE IF NOT EXISTS box_ops (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id     TEXT NOT NULL UNIQUE,
    annotator TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('add', 'change', 'delete', 'done', 'undo')),
    image_id  INTEGER NOT NULL REFERENCES box_images(image_id),
    box_id    INTEGER REFERENCES boxes(id),
    request   TEXT NOT NULL,
    before    TEXT,
    after     TEXT,
    undone_by INTEGER REFERENCES box_ops(seq),
    at        REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS box_ops_annotator ON box_ops(annotator, seq);
""",
}


def configure(conn: sqlite3.Connection, path: Path) -> None:
    """Put a fresh connection to the file at ``path`` in WAL mode with full syncs and foreign keys on."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: SQLite refused WAL journal mode (got {mode!r}); use a local disk")
    # FULL: the WAL is fsynced at every commit, so a returned add_points survives power loss too.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")


def create_or_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Inside a transaction: create the tables of a new file, or migrate an older version in place.

    Raises :class:`StoreError` for a file written by a newer (or unreadable) schema version; ``path`` only
    names the file in that message.
    """
    _execute_script(conn, _SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = 1 if row is None else _as_version(row[0])
    if version is None or version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has store schema version {row[0]}, this apis reads version "
            f"{SCHEMA_VERSION}; use the apis version that wrote it or start a new project directory"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        _execute_script(conn, _MIGRATIONS[target])
    if row is None or version != SCHEMA_VERSION:
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would COMMIT the open transaction first.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _as_version(value: str) -> int | None:
    try:
        version = int(value)
    except ValueError:
        return None
    return version if version >= 1 else None
