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
* ``query_steps`` and ``queries`` (since version 2) — questions put to people: a selection step posts one
  open query per chosen (instance, pixel) with its next-best pixels (``alternates``); an answer stores a
  point and closes the query in one transaction; "can't tell" closes it as ``skipped`` and posts the next
  alternate of the same instance as a new query (``replaces`` = the skipped one). A step is *consumed*
  once the loop has taken its answers; after that nothing of it can be undone.

Version 1 files are migrated to version 2 in place when opened (the new tables are added; nothing else
changes).

Every write is one transaction in WAL mode with ``synchronous=FULL``: after a crash the file holds
exactly the batches whose ``add_points`` call returned, never part of a batch.
"""

from __future__ import annotations

import json
import operator
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apis.atomic import write_json_atomic
from apis.data.records import CocoDataset
from apis.geometry import PixelWindow, omega

SCHEMA_VERSION = 2
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
}


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


ANSWERS = ("yes", "no", "skip")
"""What a person can answer: yes (label 1), no (label 0), or skip ("can't tell": no label)."""


class QueryNotFound(StoreError):
    """No query has this id."""


class QueryClosed(StoreError):
    """The query was answered or skipped already; ``stored`` is the stored answer (:meth:`StoredQuery.as_dict`)."""

    def __init__(self, message: str, stored: dict) -> None:
        super().__init__(message)
        self.stored = stored


class UndoRefused(StoreError):
    """An undo that would contradict what happened since (a later answer, a consumed step)."""


class StepConsumed(UndoRefused):
    """The loop has taken this step's answers; they can no longer be undone."""


class NothingToUndo(StoreError):
    """The annotator has no answer that could be undone."""


class BatchRefused(StoreError):
    """A batch of answers refused as a whole; ``problems`` pairs each bad item's index with the reason."""

    def __init__(self, problems: list[tuple[int, str]], size: int) -> None:
        self.problems = problems
        listed = "; ".join(f"item {i}: {m}" for i, m in problems[:_MAX_LISTED])
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        super().__init__(f"refused the whole batch of {size} answers, nothing was written: {listed}{more}")


@dataclass(frozen=True)
class StoredQuery:
    """A question put to people: is pixel ``(x, y)`` (column, row of the original image) on the instance?

    ``state`` is ``open``, ``answered`` (then ``label`` is 1 for yes, 0 for no) or ``skipped``.
    ``alternates`` are the next-best pixels of the same instance, best first, that replace it after a skip.
    ``replaces`` is the id of the skipped query this one replaced. Times are unix seconds.
    """

    id: int
    step: int
    instance_id: int
    image_id: int
    category_id: int
    x: int
    y: int
    strategy: str
    state: str
    alternates: tuple[tuple[int, int], ...]
    replaces: int | None
    annotator: str | None
    closed_at: float | None
    label: int | None

    @property
    def answer(self) -> str | None:
        """``yes``, ``no`` or ``skip`` once closed; None while open."""
        if self.state == "skipped":
            return "skip"
        if self.state == "answered":
            return "yes" if self.label == 1 else "no"
        return None

    def as_dict(self) -> dict:
        """Plain json-ready fields (what the server returns)."""
        return {
            "query_id": self.id, "step": self.step, "instance_id": self.instance_id, "image_id": self.image_id,
            "category_id": self.category_id, "x": self.x, "y": self.y, "strategy": self.strategy,
            "state": self.state, "answer": self.answer, "annotator": self.annotator, "closed_at": self.closed_at,
            "replaces": self.replaces,
        }


@dataclass(frozen=True)
class AnswerResult:
    """A closed query and, after a skip, the query that replaced it (None when no alternate was left)."""

    query: StoredQuery
    replacement: StoredQuery | None = None


@dataclass(frozen=True)
class UndoResult:
    """The reopened query and the id of the replacement query removed with it (after undoing a skip)."""

    reopened: StoredQuery
    removed: int | None = None


@dataclass(frozen=True)
class QueueProgress:
    """Questions of the steps not yet consumed. ``done`` counts questions settled (answered, or skipped with no
    replacement); ``open`` those waiting. ``recent`` answers and skips closed in the last ``window_s`` seconds,
    the first of them ``recent_span_s`` seconds ago."""

    steps: tuple[int, ...]
    answered: int
    skipped: int
    open: int
    recent: int
    recent_span_s: float

    @property
    def done(self) -> int:
        return self.answered + self.skipped

    @property
    def per_minute(self) -> float | None:
        """Settled questions per minute over the recent window (None before the first)."""
        if self.recent == 0:
            return None
        return self.recent / max(self.recent_span_s, 10.0) * 60.0

    @property
    def eta_s(self) -> float | None:
        """Seconds until every open question is settled at :attr:`per_minute` (None when unknown)."""
        rate = self.per_minute
        return None if rate is None else self.open / rate * 60.0


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
        """Create the tables of a new file, or migrate an older version in place (one transaction)."""
        with self._transaction() as conn:
            _execute_script(conn, _SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = 1 if row is None else _as_version(row[0])
            if version is None or version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has store schema version {row[0]}, this apis reads version "
                    f"{SCHEMA_VERSION}; use the apis version that wrote it or start a new project directory"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                _execute_script(conn, _MIGRATIONS[target])
            if row is None or version != SCHEMA_VERSION:
                conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
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

    # ------------------------------------------------------------------ queries (questions to people)

    def post_queries(
        self,
        step: int,
        choices: Sequence[Any],
        strategy: str,
        alternates: Mapping[int, Sequence[tuple[int, int]]] | None = None,
    ) -> int:
        """Post one open query per choice for ``step``; returns how many were posted.

        A choice is anything with ``instance_id``, ``x`` and ``y`` (a selection ``Choice``, an oracle ``Query``):
        the integer pixel (column, row of the original image) to ask about. ``alternates`` maps an instance id
        to its next-best pixels, best first (e.g. :func:`apis.selection.points.ranked_points`); a skip replaces
        the query by the first of them that has no answer yet. The chosen pixel and repeats are dropped from
        that list, so a ranking that starts with the choice may be passed whole.

        Idempotent: posting the same questions for a posted step again posts nothing and returns 0; different
        questions for a posted step are refused. Every pixel must lie in its instance's Ω and have no answer
        yet, one question per instance; otherwise :class:`StoreError` lists the problems and nothing is
        written. An empty ``choices`` records a step with nothing to ask (complete at once).
        """
        if _as_int(step) is None or step < 0:
            raise StoreError(f"step must be a non-negative integer, got {step!r}")
        if not isinstance(strategy, str) or not strategy:
            raise StoreError(f"strategy must be a non-empty string naming how the pixels were chosen, got {strategy!r}")
        wanted = [(_as_int(c.instance_id), _as_int(c.x), _as_int(c.y)) for c in choices]
        alternates = dict(alternates or {})
        now = time.time()
        with self._transaction() as conn:
            posted = conn.execute("SELECT strategy FROM query_steps WHERE step = ?", (step,)).fetchone()
            if posted is not None:
                rows = conn.execute("SELECT instance_id, x, y FROM queries WHERE step = ? AND replaces IS NULL",
                                    (step,)).fetchall()
                if posted[0] == strategy and set(rows) == set(wanted) and len(rows) == len(wanted):
                    return 0
                raise StoreError(
                    f"step {step} already has {len(rows)} questions posted (strategy {posted[0]!r}) that differ "
                    f"from these {len(wanted)} ({strategy!r}); post each step once, or use a new step number"
                )
            rows = self._check_queries(conn, step, wanted, alternates, now)
            conn.execute("INSERT INTO query_steps(step, strategy, posted_at) VALUES (?, ?, ?)", (step, strategy, now))
            conn.executemany(
                "INSERT INTO queries(step, instance_id, x, y, alternates, created_at) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
        return len(rows)

    def _check_queries(
        self,
        conn: sqlite3.Connection,
        step: int,
        wanted: Sequence[tuple[int | None, int | None, int | None]],
        alternates: Mapping[int, Sequence[tuple[int, int]]],
        now: float,
    ) -> list[tuple]:
        ids = sorted({i for i, _, _ in wanted if i is not None})
        stored = _fetch_by_ids(conn, "SELECT * FROM instances WHERE id IN ({})", ids)
        windows = {r[0]: _instance(r).omega for r in stored}
        answered = {(r[0], r[1], r[2]) for r in
                    _fetch_by_ids(conn, "SELECT instance_id, x, y FROM points WHERE instance_id IN ({})", ids)}
        problems: list[str] = []
        rows: list[tuple] = []
        seen: set[int] = set()
        for iid, x, y in wanted:
            where = f"instance {iid} pixel (x={x}, y={y})"
            if None in (iid, x, y):
                problems.append(f"{where}: instance id, x and y must be integers")
            elif iid not in windows:
                problems.append(f"{where}: unknown instance; add its dataset with Store.add_instances first")
            elif not windows[iid].contains(x, y):
                problems.append(f"{where}: outside the instance's Ω; ask only about pixels whose centres are in "
                                "the box")
            elif (iid, x, y) in answered:
                problems.append(f"{where}: already answered; ask about a pixel not yet labelled")
            elif iid in seen:
                problems.append(f"{where}: a second question for the instance in step {step}; post one per instance")
            else:
                seen.add(iid)
                alts, problem = _clean_alternates(iid, (x, y), alternates.get(iid, ()), windows[iid], answered)
                if problem:
                    problems.append(problem)
                rows.append((step, iid, x, y, json.dumps(alts), now))
        stray = sorted(set(alternates) - seen)
        if stray and not problems:
            problems.append(f"alternates given for instances {stray[:_MAX_LISTED]} that have no question in this "
                            "batch; pass alternates only for the chosen instances")
        if problems:
            listed = "; ".join(problems[:_MAX_LISTED])
            more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
            raise StoreError(f"refused all {len(wanted)} questions of step {step}, nothing was posted: {listed}{more}")
        return rows

    def query(self, query_id: int) -> StoredQuery:
        """The query with this id; :class:`QueryNotFound` when there is none."""
        return _query_row(self._conn, query_id)

    def queries(self, step: int | None = None, state: str | None = None) -> list[StoredQuery]:
        """Queries ordered by id, optionally only those of ``step`` and/or in ``state``."""
        where, args = [], []
        if step is not None:
            where.append("q.step = ?")
            args.append(step)
        if state is not None:
            where.append("q.state = ?")
            args.append(state)
        sql = _QUERY_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY q.id"
        return [_stored_query(r) for r in self._conn.execute(sql, args)]

    def open_queries(
        self, step: int | None = None, limit: int | None = None, exclude: Collection[int] = ()
    ) -> list[StoredQuery]:
        """Open queries ordered by id (oldest first), optionally of one ``step``, leaving out ids in ``exclude``."""
        sql = _QUERY_SELECT + " WHERE q.state = 'open'"
        args: list[Any] = []
        if step is not None:
            sql += " AND q.step = ?"
            args.append(step)
        excluded = sorted(set(exclude))
        if excluded:
            sql += f" AND q.id NOT IN ({','.join('?' * len(excluded))})"
            args.extend(excluded)
        sql += " ORDER BY q.id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [_stored_query(r) for r in self._conn.execute(sql, args)]

    def answer_query(self, query_id: int, answer: str, annotator: str, now: float | None = None) -> AnswerResult:
        """Close an open query with ``answer`` (``yes``, ``no`` or ``skip``) given by ``annotator``.

        Yes/no store a point (label 1/0, the query's step and strategy, ``annotator``) and close the query in
        one transaction. Skip closes it as skipped and, in the same transaction, posts the first alternate
        pixel without an answer as a new open query (none left: the instance gets no point this step).
        Raises :class:`QueryNotFound`, :class:`QueryClosed` (carrying the stored answer), or
        :class:`StoreError` for a bad answer or a pixel answered meanwhile by other means.
        """
        _check_answer_args(answer, annotator)
        with self._transaction() as conn:
            return _close_query(conn, self, int(query_id), answer, annotator, time.time() if now is None else now)

    def answer_queries(self, items: Sequence[tuple[int, str]], annotator: str) -> list[AnswerResult]:
        """Close many queries in one transaction (all or nothing); ``items`` are ``(query_id, answer)``.

        A query already closed with the same answer is left as it is (so a file can be imported twice);
        anything else that :meth:`answer_query` refuses refuses the whole batch with :class:`BatchRefused`,
        whose ``problems`` pair each refused item's index in ``items`` with the reason.
        """
        if not isinstance(annotator, str) or not annotator:
            raise StoreError(f"annotator must be a non-empty string, got {annotator!r}")
        now = time.time()
        results: list[AnswerResult] = []
        problems: list[tuple[int, str]] = []
        with self._transaction() as conn:
            for index, (query_id, answer) in enumerate(items):
                try:
                    _check_answer_args(answer, annotator)
                    results.append(_close_query(conn, self, query_id, answer, annotator, now))
                except QueryClosed as err:
                    if err.stored.get("answer") != answer:
                        problems.append((index, str(err)))
                except StoreError as err:
                    problems.append((index, str(err)))
            if problems:
                raise BatchRefused(problems, len(items))
        return results

    def answer_each(self, items: Sequence[tuple[int, str, str]]) -> list[AnswerResult | StoreError]:
        """Answers from several people in one transaction (one disk sync), each accepted or refused on its own.

        ``items`` are ``(query_id, answer, annotator)``; the result in each slot is what :meth:`answer_query`
        would return, or the :class:`StoreError` it would raise (nothing of that item is written). Meant for a
        server that commits the answers arriving together as a group before replying to each.
        """
        now = time.time()
        results: list[AnswerResult | StoreError] = []
        with self._transaction() as conn:
            for query_id, answer, annotator in items:
                conn.execute("SAVEPOINT item")
                try:
                    _check_answer_args(answer, annotator)
                    results.append(_close_query(conn, self, query_id, answer, annotator, now))
                except StoreError as err:
                    conn.execute("ROLLBACK TO item")
                    results.append(err)
                conn.execute("RELEASE item")
        return results

    def undo_last(self, annotator: str) -> UndoResult:
        """Reopen ``annotator``'s most recent answer or skip: its point is deleted (after a skip, the replacement
        query is removed instead). Calling it again undoes the answer before, and so on.

        Raises :class:`NothingToUndo`, :class:`StepConsumed` once the loop has taken the step's answers, or
        :class:`UndoRefused` when a skip's replacement has been answered already.
        """
        with self._transaction() as conn:
            row = conn.execute("SELECT id, point_id FROM queries WHERE annotator = ? AND state != 'open' "
                               "ORDER BY closed_seq DESC LIMIT 1", (annotator,)).fetchone()
            if row is None:
                raise NothingToUndo(f"{annotator} has no answer to undo")
            query_id, point_id = row
            query = _query_row(conn, query_id)
            if _consumed(conn, query.step):
                raise StepConsumed(
                    f"query {query_id}: step {query.step} has been consumed by the active loop (its answers trained "
                    "a model), so its answers can no longer be undone"
                )
            removed = None
            if query.state == "skipped":
                sql = "SELECT id, state, annotator FROM queries WHERE replaces = ?"
                rep = conn.execute(sql, (query_id,)).fetchone()
                if rep is not None:
                    if rep[1] != "open":
                        raise UndoRefused(
                            f"query {query_id} was skipped and its replacement, query {rep[0]}, has since been "
                            f"{rep[1]} by {rep[2]}; that answer has to be undone first"
                        )
                    conn.execute("DELETE FROM queries WHERE id = ?", (rep[0],))
                    removed = rep[0]
            conn.execute("UPDATE queries SET state = 'open', point_id = NULL, annotator = NULL, closed_at = NULL, "
                         "closed_seq = NULL WHERE id = ?", (query_id,))
            if point_id is not None:
                conn.execute("DELETE FROM points WHERE id = ?", (point_id,))
            return UndoResult(_query_row(conn, query_id), removed)

    def step_posted(self, step: int) -> bool:
        """Whether questions (possibly none) have been posted for ``step``."""
        return self._conn.execute("SELECT 1 FROM query_steps WHERE step = ?", (step,)).fetchone() is not None

    def step_complete(self, step: int) -> bool:
        """True when ``step`` has been posted and none of its queries is open any more."""
        return self.step_posted(step) and self._conn.execute(
            "SELECT 1 FROM queries WHERE step = ? AND state = 'open' LIMIT 1", (step,)).fetchone() is None

    def step_consumed(self, step: int) -> bool:
        """True once :meth:`consume_step` has recorded that the loop took the step's answers."""
        return _consumed(self._conn, step)

    def consume_step(self, step: int, phase: str | None = None, phase_payload: dict | None = None) -> None:
        """Record that the loop has taken the answers of a complete ``step``; from then on none can be undone.

        When ``phase`` is given it is marked complete (as :meth:`mark_phase`) in the same transaction. Idempotent.
        Refuses (:class:`StoreError`) a step never posted or with open queries.
        """
        payload = _payload_json(phase, phase_payload) if phase is not None else None
        now = time.time()
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM query_steps WHERE step = ?", (step,)).fetchone() is None:
                raise StoreError(f"step {step} has no posted questions; post them (apis.queue.post) before consuming")
            sql = "SELECT COUNT(*) FROM queries WHERE step = ? AND state = 'open'"
            n_open = conn.execute(sql, (step,)).fetchone()[0]
            if n_open:
                raise StoreError(f"step {step} still has {n_open} open questions; wait until people have answered them")
            conn.execute("UPDATE query_steps SET consumed_at = COALESCE(consumed_at, ?), phase = COALESCE(phase, ?) "
                         "WHERE step = ?", (now, phase, step))
            if phase is not None:
                _write_phase(conn, phase, payload, now)

    def answers_for_step(self, step: int) -> list[PointAnswer]:
        """The points people gave for ``step`` (skips have none), in query order."""
        sql = ("SELECT p.instance_id, p.x, p.y, p.label, p.step, p.strategy, p.annotator, p.answered_at "
               "FROM queries q JOIN points p ON p.id = q.point_id WHERE q.step = ? AND q.state = 'answered' "
               "ORDER BY q.id")
        return [PointAnswer(*r) for r in self._conn.execute(sql, (step,))]

    def queue_progress(self, now: float | None = None, window_s: float = 300.0) -> QueueProgress:
        """Counts over the steps not yet consumed, and how many questions were settled in the last ``window_s``."""
        now = time.time() if now is None else now
        steps = tuple(r[0] for r in self._conn.execute(
            "SELECT step FROM query_steps WHERE consumed_at IS NULL ORDER BY step"))
        if not steps:
            return QueueProgress((), 0, 0, 0, 0, 0.0)
        marks = ",".join("?" * len(steps))
        counts = dict(self._conn.execute(
            f"SELECT state, COUNT(*) FROM queries WHERE step IN ({marks}) GROUP BY state", steps).fetchall())
        replaced = self._conn.execute(
            f"SELECT COUNT(*) FROM queries WHERE step IN ({marks}) AND replaces IS NOT NULL", steps).fetchone()[0]
        settled = ("(q.state = 'answered' OR (q.state = 'skipped' AND NOT EXISTS "
                   "(SELECT 1 FROM queries r WHERE r.replaces = q.id)))")
        recent, first = self._conn.execute(
            f"SELECT COUNT(*), MIN(q.closed_at) FROM queries q WHERE q.closed_at >= ? AND q.step IN ({marks}) "
            f"AND {settled}", (now - window_s, *steps)).fetchone()
        return QueueProgress(steps, counts.get("answered", 0), counts.get("skipped", 0) - replaced,
                             counts.get("open", 0), recent, 0.0 if first is None else now - first)

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


_QUERY_SELECT = (
    "SELECT q.id, q.step, q.instance_id, i.image_id, i.category_id, q.x, q.y, s.strategy, q.state, q.alternates, "
    "q.replaces, q.annotator, q.closed_at, p.label FROM queries q JOIN instances i ON i.id = q.instance_id "
    "JOIN query_steps s ON s.step = q.step LEFT JOIN points p ON p.id = q.point_id"
)


def _stored_query(row: Sequence[Any]) -> StoredQuery:
    qid, step, iid, image_id, category_id, x, y, strategy, state, alternates, replaces, annotator, closed, label = row
    alts = tuple((int(a), int(b)) for a, b in json.loads(alternates))
    return StoredQuery(qid, step, iid, image_id, category_id, x, y, strategy, state, alts, replaces, annotator,
                       closed, label)


def _query_row(conn: sqlite3.Connection, query_id: int) -> StoredQuery:
    qid = _as_int(query_id)
    if qid is None:
        raise StoreError(f"query id must be an integer, got {query_id!r}")
    row = conn.execute(_QUERY_SELECT + " WHERE q.id = ?", (qid,)).fetchone()
    if row is None:
        raise QueryNotFound(f"there is no query {qid}; take query ids from the open questions (apis queue export)")
    return _stored_query(row)


def _consumed(conn: sqlite3.Connection, step: int) -> bool:
    row = conn.execute("SELECT consumed_at FROM query_steps WHERE step = ?", (step,)).fetchone()
    return row is not None and row[0] is not None


def _check_answer_args(answer: Any, annotator: Any) -> None:
    if answer not in ANSWERS:
        raise StoreError(f"answer {answer!r} is not one of {', '.join(ANSWERS)}; skip means \"can't tell\"")
    if not isinstance(annotator, str) or not annotator:
        raise StoreError(f"annotator must be a non-empty string, got {annotator!r}")


def _clean_alternates(
    instance_id: int,
    chosen: tuple[int, int],
    alternates: Iterable[tuple[int, int]],
    window: PixelWindow,
    answered: set[tuple[int, int, int]],
) -> tuple[list[tuple[int, int]], str | None]:
    """The alternates as a list of distinct unanswered ``(x, y)`` other than ``chosen``, or the first problem."""
    out: list[tuple[int, int]] = []
    for xy in alternates:
        x, y = (_as_int(v) for v in xy) if len(xy) == 2 else (None, None)
        if x is None or y is None:
            return [], f"instance {instance_id}: alternate {xy!r} is not an (x, y) pair of integer pixels"
        if not window.contains(x, y):
            return [], (f"instance {instance_id}: alternate pixel (x={x}, y={y}) lies outside the instance's Ω; "
                        "rank only pixels whose centres are in the box")
        if (x, y) != chosen and (x, y) not in out and (instance_id, x, y) not in answered:
            out.append((x, y))
    return out, None


def _close_query(
    conn: sqlite3.Connection, store: Store, query_id: int, answer: str, annotator: str, now: float
) -> AnswerResult:
    """Inside a transaction: answer or skip one open query (see :meth:`Store.answer_query`)."""
    query = _query_row(conn, query_id)
    if query.state != "open":
        said = "skipped" if query.state == "skipped" else f"answered {query.answer!r}"
        raise QueryClosed(f"query {query.id} was already {said} by {query.annotator}; nothing changed",
                          query.as_dict())
    seq = conn.execute("SELECT COALESCE(MAX(closed_seq), 0) + 1 FROM queries").fetchone()[0]
    if answer != "skip":
        label = 1 if answer == "yes" else 0
        point = PointAnswer(query.instance_id, query.x, query.y, label, query.step, query.strategy, annotator, now)
        row = store._check_batch(conn, [point], now)[0]
        point_id = conn.execute(
            "INSERT INTO points(instance_id, step, x, y, label, strategy, annotator, answered_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row).lastrowid
        conn.execute("UPDATE queries SET state = 'answered', point_id = ?, annotator = ?, closed_at = ?, "
                     "closed_seq = ? WHERE id = ?", (point_id, annotator, now, seq, query.id))
        return AnswerResult(_query_row(conn, query.id))
    conn.execute("UPDATE queries SET state = 'skipped', annotator = ?, closed_at = ?, closed_seq = ? WHERE id = ?",
                 (annotator, now, seq, query.id))
    taken = set(conn.execute("SELECT x, y FROM points WHERE instance_id = ?", (query.instance_id,)).fetchall())
    taken |= set(conn.execute("SELECT x, y FROM queries WHERE instance_id = ? AND step = ?",
                              (query.instance_id, query.step)).fetchall())
    left = [xy for xy in query.alternates if xy not in taken]
    replacement = None
    if left:
        new_id = conn.execute(
            "INSERT INTO queries(step, instance_id, x, y, alternates, replaces, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (query.step, query.instance_id, *left[0], json.dumps(left[1:]), query.id, now)).lastrowid
        replacement = _query_row(conn, new_id)
    return AnswerResult(_query_row(conn, query.id), replacement)


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


__all__ = [
    "ANSWERS",
    "DB_NAME",
    "SCHEMA_VERSION",
    "AnswerResult",
    "BatchRefused",
    "NothingToUndo",
    "PointAnswer",
    "QueryClosed",
    "QueryNotFound",
    "QueueProgress",
    "StepConsumed",
    "Store",
    "StoreError",
    "StoredInstance",
    "StoredPoint",
    "StoredQuery",
    "UndoRefused",
    "UndoResult",
]
