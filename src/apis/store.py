"""The project's answers on disk: one SQLite file per project directory.

Tables (schema version :data:`SCHEMA_VERSION`):

* ``instances`` — one row per pool instance (COCO annotation id), its xyxy box in original-image pixels,
  the image size and the split it belongs to. Crowd regions are never stored: nobody is asked about them.
* ``points`` — every yes/no answer: the integer pixel ``(x, y) = (column, row)`` of the original image,
  ``label`` 1 when the pixel is on the object, the step that asked, the strategy that chose it, who
  answered and when (unix seconds). A pixel is answered at most once per instance.
* ``phases`` — completed phases of the active loop with a json payload, so a killed run resumes where
  it stopped.
* ``meta`` — key/value pairs, among them the schema version.

(A ``queries`` table for open questions to people belongs next to ``points`` when ``serve`` needs it.)

Every write is one transaction in WAL mode with ``synchronous=FULL``: after a crash the file holds
exactly the batches whose ``add_points`` call returned, never part of a batch.
"""

from __future__ import annotations

import json
import operator
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apis.data.records import CocoDataset
from apis.geometry import PixelWindow, omega

SCHEMA_VERSION = 1
DB_NAME = "apis.sqlite"
# SQLite caps the number of host parameters per statement; stay well below every build's limit.
_CHUNK = 500
# A refused batch lists this many problems; the rest are counted.
_MAX_LISTED = 10

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


class StoreError(ValueError):
    """A write the store refuses, or a store file it cannot use. The message names the record and the fix."""


@dataclass(frozen=True)
class PointAnswer:
    """One answer to be stored: is pixel ``(x, y)`` (column, row of the original image) on the instance?

    ``label`` is 1 for yes, 0 for no. ``step`` is the loop step that asked (0 for P0). ``answered_at`` is
    unix seconds; None means "now" at the time the batch is written.
    """

    instance_id: int
    x: int
    y: int
    label: int
    step: int
    strategy: str
    annotator: str = "oracle"
    answered_at: float | None = None


@dataclass(frozen=True)
class StoredInstance:
    """A pool instance as stored: ``box`` is xyxy in original-image pixels of a ``width``×``height`` image."""

    id: int
    image_id: int
    category_id: int
    box: tuple[float, float, float, float]
    width: int
    height: int
    split: str

    @property
    def omega(self) -> PixelWindow:
        """Pixels that may be asked about: centres inside the box (:func:`apis.geometry.omega`)."""
        return omega(self.box, self.width, self.height)


@dataclass(frozen=True)
class StoredPoint:
    """A stored answer; ``id`` grows with insertion order, so it orders answers within a step."""

    id: int
    instance_id: int
    step: int
    x: int
    y: int
    label: int
    strategy: str
    annotator: str
    answered_at: float


class Store:
    """Instances, answered points and completed phases of one project, in one SQLite file.

    Open with :meth:`Store.open` and use as a context manager (or call :meth:`close`).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: Path | str) -> Store:
        """Open (creating if needed) the store at ``path``.

        ``path`` is either the database file or an existing project directory, in which case the file is
        ``path / DB_NAME``. Raises :class:`StoreError` for a file written by another schema version.
        """
        path = Path(path)
        if path.is_dir():
            path = path / DB_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction spans exactly one call.
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        try:
            _configure(conn, path)
            store = cls(conn, path)
            store._create_schema()
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so checks made inside the transaction still hold when
        # its writes commit, even with a second process (e.g. the labelling server) writing too.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _create_schema(self) -> None:
        with self._transaction() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise StoreError(
                    f"{self.path} has store schema version {row[0]}, this apis reads version "
                    f"{SCHEMA_VERSION}; use the apis version that wrote it or start a new project directory"
                )

    # ------------------------------------------------------------------ instances

    def add_instances(self, dataset: CocoDataset, split: str) -> int:
        """Store the pool instances (no crowd) of ``dataset`` under ``split``; returns how many were new.

        Idempotent: instances already stored with the same image, category, box, image size and split are
        skipped. An id already stored with different values raises :class:`StoreError` and nothing is
        written.
        """
        rows = [
            (a.id, im.id, a.category_id, *(float(v) for v in a.box), im.width, im.height, split)
            for im in dataset.images
            for a in im.pool
        ]
        with self._transaction() as conn:
            existing = _fetch_by_ids(conn, "SELECT * FROM instances WHERE id IN ({})", [r[0] for r in rows])
            known = {r[0]: tuple(r) for r in existing}
            new: dict[int, tuple] = {}
            for row in rows:
                before = known.get(row[0], new.get(row[0]))
                if before is None:
                    new[row[0]] = row
                elif before != row:
                    raise StoreError(
                        f"instance {row[0]} is already stored as {_describe_row(before)} but "
                        f"{dataset.json_path} has {_describe_row(row)}; annotation ids must be unique across "
                        "files and splits: fix the annotation file or use a new project directory"
                    )
            conn.executemany(f"INSERT INTO instances VALUES ({', '.join('?' * 10)})", list(new.values()))
        return len(new)

    def instances(self, split: str | None = None) -> list[StoredInstance]:
        """Stored instances ordered by id, optionally only those of ``split``."""
        if split is None:
            rows = self._conn.execute("SELECT * FROM instances ORDER BY id").fetchall()
        else:
            sql = "SELECT * FROM instances WHERE split = ? ORDER BY id"
            rows = self._conn.execute(sql, (split,)).fetchall()
        return [_instance(r) for r in rows]

    # ------------------------------------------------------------------ points

    def add_points(
        self,
        answers: Iterable[PointAnswer],
        *,
        phase: str | None = None,
        phase_payload: dict | None = None,
    ) -> int:
        """Store a batch of answers in one transaction; returns the number stored.

        Every answer is checked first; if any is refused (unknown instance, pixel outside the instance's Ω,
        label other than 0/1, negative step, a pixel already answered for that instance or answered twice in
        the batch) a :class:`StoreError` lists the problems and nothing is written. When ``phase`` is given,
        it is marked complete (as :meth:`mark_phase`) in the same transaction, so answers and the record
        that they were collected can never disagree after a crash.
        """
        batch = list(answers)
        now = time.time()
        payload = _payload_json(phase, phase_payload) if phase is not None else None
        with self._transaction() as conn:
            rows = self._check_batch(conn, batch, now)
            conn.executemany(
                "INSERT INTO points(instance_id, step, x, y, label, strategy, annotator, answered_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if phase is not None:
                _write_phase(conn, phase, payload, now)
        return len(rows)

    def _check_batch(self, conn: sqlite3.Connection, batch: Sequence[PointAnswer], now: float) -> list[tuple]:
        """Validate ``batch`` against the stored instances and points; returns rows ready to insert."""
        ids = sorted({i for i in (_as_int(a.instance_id) for a in batch) if i is not None})
        stored = _fetch_by_ids(conn, "SELECT * FROM instances WHERE id IN ({})", ids)
        windows = {r[0]: _instance(r).omega for r in stored}
        sql = "SELECT instance_id, x, y, step FROM points WHERE instance_id IN ({})"
        labelled = _fetch_by_ids(conn, sql, ids)
        answered = {(r[0], r[1], r[2]): r[3] for r in labelled}
        problems: list[str] = []
        seen: set[tuple[int, int, int]] = set()
        rows: list[tuple] = []
        for answer in batch:
            problem, row = _check_answer(answer, windows, answered, seen, now)
            if problem:
                problems.append(problem)
            else:
                rows.append(row)
        if problems:
            raise StoreError(_refusal(len(batch), problems))
        return rows

    def points(self, max_step: int | None = None) -> dict[int, list[StoredPoint]]:
        """Answers per instance id, each list ordered by step then insertion; only steps ≤ ``max_step``."""
        sql = "SELECT id, instance_id, step, x, y, label, strategy, annotator, answered_at FROM points"
        args: tuple = ()
        if max_step is not None:
            sql += " WHERE step <= ?"
            args = (max_step,)
        out: dict[int, list[StoredPoint]] = {}
        for row in self._conn.execute(sql + " ORDER BY step, id", args):
            point = StoredPoint(*row)
            out.setdefault(point.instance_id, []).append(point)
        return out

    def point_count(self, max_step: int | None = None) -> int:
        """Number of stored answers (steps ≤ ``max_step`` when given)."""
        if max_step is None:
            return self._conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM points WHERE step <= ?", (max_step,)).fetchone()[0]

    def steps(self) -> list[int]:
        """The steps that have at least one answer, ascending."""
        return [r[0] for r in self._conn.execute("SELECT DISTINCT step FROM points ORDER BY step")]

    # ------------------------------------------------------------------ phases

    def mark_phase(self, name: str, payload: dict) -> None:
        """Record phase ``name`` as completed with a json-serialisable ``payload`` (replaces earlier ones)."""
        text = _payload_json(name, payload)
        with self._transaction() as conn:
            _write_phase(conn, name, text, time.time())

    def phase(self, name: str) -> dict | None:
        """The payload recorded for a completed phase, or None if it has not completed."""
        row = self._conn.execute("SELECT payload FROM phases WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def phase_names(self) -> list[str]:
        """Completed phases in the order they were (last) recorded."""
        return [r[0] for r in self._conn.execute("SELECT name FROM phases ORDER BY completed_at, rowid")]

    # ------------------------------------------------------------------ COCO exchange

    def export_coco(self, dataset_json: Path | str, out: Path | str, max_step: int | None = None) -> int:
        """Write ``dataset_json`` to ``out`` with each stored instance's answers (steps ≤ ``max_step``).

        Every annotation that is a stored instance gets ``point_coords`` ``[[x, y], ...]`` (integer pixels,
        x = column, y = row of the original image) and ``point_labels`` ``[0/1, ...]`` — detectron2
        PointSup's format — possibly empty. Other annotations (crowd, other splits) are left as they are.
        The file is replaced atomically. Returns the number of points written.
        """
        dataset_json = Path(dataset_json)
        coco = _read_json(dataset_json)
        stored = {inst.id: inst for inst in self.instances()}
        points = self.points(max_step)
        written = 0
        found: set[int] = set()
        for ann in coco.get("annotations", []):
            inst = stored.get(ann.get("id"))
            if inst is None:
                continue
            if ann.get("image_id") != inst.image_id:
                raise StoreError(
                    f"{dataset_json}: annotation {inst.id} is on image {ann.get('image_id')} but the store "
                    f"has it on image {inst.image_id}; export to the COCO file the instances were added from"
                )
            found.add(inst.id)
            mine = points.get(inst.id, [])
            ann["point_coords"] = [[p.x, p.y] for p in mine]
            ann["point_labels"] = [p.label for p in mine]
            written += len(mine)
        missing = sorted(set(points) - found)
        if missing:
            raise StoreError(
                f"{dataset_json} lacks annotations {missing[:_MAX_LISTED]} that have stored points; "
                "export to the COCO file the instances were added from"
            )
        write_json_atomic(coco, Path(out))
        return written

    def import_coco(
        self, path: Path | str, step: int, strategy: str = "imported", annotator: str = "import"
    ) -> int:
        """Add the ``point_coords``/``point_labels`` of a COCO file as answers of ``step``; returns how many.

        The whole file is one batch with the checks of :meth:`add_points`; errors name the file and the
        annotation id.
        """
        path = Path(path)
        coco = _read_json(path)
        answers: list[PointAnswer] = []
        for ann in coco.get("annotations", []):
            if "point_coords" in ann or "point_labels" in ann:
                answers.extend(_answers_from_annotation(path, ann, step, strategy, annotator))
        try:
            return self.add_points(answers)
        except StoreError as err:
            raise StoreError(f"{path}: {err} (instance ids are the file's annotation ids)") from None


# ---------------------------------------------------------------------- helpers


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: SQLite refused WAL journal mode (got {mode!r}); use a local disk")
    # FULL: the WAL is fsynced at every commit, so a returned add_points survives power loss too.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")


def _fetch_by_ids(conn: sqlite3.Connection, sql: str, ids: Sequence[int]) -> list[tuple]:
    """Run ``sql`` (with one ``IN ({})`` placeholder) over ``ids`` in chunks."""
    rows: list[tuple] = []
    ids = list(ids)
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        rows.extend(conn.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall())
    return rows


def _instance(row: Sequence[Any]) -> StoredInstance:
    iid, image_id, category_id, x0, y0, x1, y1, width, height, split = row
    return StoredInstance(iid, image_id, category_id, (x0, y0, x1, y1), width, height, split)


def _describe_row(row: Sequence[Any]) -> str:
    _, image_id, category_id, x0, y0, x1, y1, width, height, split = row
    return (
        f"(image {image_id}, category {category_id}, box xyxy ({x0}, {y0}, {x1}, {y1}), "
        f"image {width}x{height}, split {split!r})"
    )


def _as_int(value: Any) -> int | None:
    """``value`` as an int when it is an integer type (numpy ints included, bools and floats not)."""
    if isinstance(value, bool):
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        return None


def _check_answer(
    answer: PointAnswer,
    windows: dict[int, PixelWindow],
    answered: dict[tuple[int, int, int], int],
    seen: set[tuple[int, int, int]],
    now: float,
) -> tuple[str | None, tuple]:
    """One answer's problem (None when fine) and its row for ``points``."""
    iid, x, y = _as_int(answer.instance_id), _as_int(answer.x), _as_int(answer.y)
    label, step = _as_int(answer.label), _as_int(answer.step)
    where = f"instance {answer.instance_id} pixel (x={answer.x}, y={answer.y})"
    if None in (iid, x, y, step):
        return f"{where}: instance id, x, y and step must be integers; pass integer pixels", ()
    if iid not in windows:
        return f"{where}: unknown instance; add its dataset with Store.add_instances first", ()
    win = windows[iid]
    if not win.contains(x, y):
        return (
            f"{where}: outside the instance's Ω (columns {win.x0}..{win.x1 - 1}, "
            f"rows {win.y0}..{win.y1 - 1}: pixels whose centres lie in the box); ask only about pixels in Ω",
            (),
        )
    if label not in (0, 1):
        return f"{where}: label {answer.label!r} is not 0 or 1; answer 1 for on the object, 0 for off", ()
    if step < 0:
        return f"{where}: step {step} is negative; P0 is step 0", ()
    if not (isinstance(answer.strategy, str) and answer.strategy and isinstance(answer.annotator, str)
            and answer.annotator):
        return f"{where}: strategy and annotator must be non-empty strings", ()
    key = (iid, x, y)
    if key in answered:
        return f"{where}: already answered at step {answered[key]}; ask about a pixel not yet labelled", ()
    if key in seen:
        return f"{where}: answered twice in this batch; keep one answer per pixel", ()
    seen.add(key)
    when = now if answer.answered_at is None else float(answer.answered_at)
    return None, (iid, step, x, y, label, answer.strategy, answer.annotator, when)


def _refusal(size: int, problems: list[str]) -> str:
    listed = "; ".join(problems[:_MAX_LISTED])
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"refused the whole batch of {size} answers, nothing was written: {listed}{more}"


def _payload_json(name: str, payload: dict | None) -> str:
    if not isinstance(payload, dict):
        raise StoreError(f"phase {name!r}: payload must be a dict, got {type(payload).__name__}")
    try:
        return json.dumps(payload, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"phase {name!r}: payload is not plain json ({err}); store paths as str and numbers as int/float"
        ) from err


def _write_phase(conn: sqlite3.Connection, name: str, payload_json: str, when: float) -> None:
    sql = "INSERT OR REPLACE INTO phases(name, completed_at, payload) VALUES (?, ?, ?)"
    conn.execute(sql, (name, when, payload_json))


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: cannot read COCO json ({err})") from err
    if not isinstance(data, dict):
        raise StoreError(f"{path}: a COCO file holds a json object at top level")
    return data


def _integral(value: Any) -> int | None:
    """A json number that is a whole number, as int; None otherwise (e.g. 12.5 or "3")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if float(value).is_integer() else None


def _answers_from_annotation(
    path: Path, ann: dict, step: int, strategy: str, annotator: str
) -> list[PointAnswer]:
    aid = ann.get("id")
    coords, labels = ann.get("point_coords"), ann.get("point_labels")
    if not isinstance(coords, list) or not isinstance(labels, list) or len(coords) != len(labels):
        raise StoreError(
            f"{path}: annotation {aid}: point_coords and point_labels must be lists of the same length; "
            "write one [x, y] per label"
        )
    answers = []
    for xy, label in zip(coords, labels, strict=True):
        x, y = (_integral(v) for v in xy) if isinstance(xy, list) and len(xy) == 2 else (None, None)
        if x is None or y is None:
            raise StoreError(
                f"{path}: annotation {aid}: point {xy!r} is not an [x, y] pair of integer pixels "
                "(x = column, y = row of the original image)"
            )
        lab = _integral(label)
        answers.append(PointAnswer(aid, x, y, label if lab is None else lab, step, strategy, annotator))
    return answers


def write_json_atomic(data: Any, out: Path) -> None:
    """Write ``data`` as json to ``out`` so that readers see the old file or the new one, never a part."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(out.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "PointAnswer",
    "Store",
    "StoreError",
    "StoredInstance",
    "StoredPoint",
    "write_json_atomic",
]
