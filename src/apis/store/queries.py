"""The question queue: questions put to people, their answers, skips and undos, and how far the queue is.

A selection step posts one open query per chosen (instance, pixel) with its next-best pixels. An answer
stores its point through the same checks as any batch of answers (:func:`apis.store.points.check_batch`)
and closes the query; a skip posts the next alternate as a new query. The functions that write run inside
a transaction the caller holds, so each answer, skip or undo is all or nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apis.geometry import PixelWindow
from apis.store.errors import (
    MAX_LISTED,
    BatchRefused,
    NothingToUndo,
    QueryClosed,
    QueryNotFound,
    StepConsumed,
    StoreError,
    UndoRefused,
)
from apis.store.phases import write_phase
from apis.store.points import PointAnswer, as_int, check_batch, fetch_by_ids, instance_from_row

ANSWERS = ("yes", "no", "skip")
"""What a person can answer: yes (label 1), no (label 0), or skip ("can't tell": no label)."""


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


_QUERY_SELECT = (
    "SELECT q.id, q.step, q.instance_id, i.image_id, i.category_id, q.x, q.y, s.strategy, q.state, q.alternates, "
    "q.replaces, q.annotator, q.closed_at, p.label FROM queries q JOIN instances i ON i.id = q.instance_id "
    "JOIN query_steps s ON s.step = q.step LEFT JOIN points p ON p.id = q.point_id"
)


# ---------------------------------------------------------------------- posting


def check_post_args(
    step: Any, strategy: Any, choices: Sequence[Any]
) -> list[tuple[int | None, int | None, int | None]]:
    """The ``(instance_id, x, y)`` of each choice, after checking ``step`` and ``strategy``; before the transaction."""
    if as_int(step) is None or step < 0:
        raise StoreError(f"step must be a non-negative integer, got {step!r}")
    if not isinstance(strategy, str) or not strategy:
        raise StoreError(f"strategy must be a non-empty string naming how the pixels were chosen, got {strategy!r}")
    return [(as_int(c.instance_id), as_int(c.x), as_int(c.y)) for c in choices]


def insert_queries(
    conn: sqlite3.Connection,
    step: int,
    wanted: Sequence[tuple[int | None, int | None, int | None]],
    strategy: str,
    alternates: Mapping[int, Sequence[tuple[int, int]]],
    now: float,
) -> int:
    """Inside a transaction: post the ``wanted`` questions of ``step`` (see :meth:`apis.store.Store.post_queries`)."""
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
    rows = _check_queries(conn, step, wanted, alternates, now)
    conn.execute("INSERT INTO query_steps(step, strategy, posted_at) VALUES (?, ?, ?)", (step, strategy, now))
    conn.executemany(
        "INSERT INTO queries(step, instance_id, x, y, alternates, created_at) VALUES (?, ?, ?, ?, ?, ?)", rows
    )
    return len(rows)


def _check_queries(
    conn: sqlite3.Connection,
    step: int,
    wanted: Sequence[tuple[int | None, int | None, int | None]],
    alternates: Mapping[int, Sequence[tuple[int, int]]],
    now: float,
) -> list[tuple]:
    ids = sorted({i for i, _, _ in wanted if i is not None})
    stored = fetch_by_ids(conn, "SELECT * FROM instances WHERE id IN ({})", ids)
    windows = {r[0]: instance_from_row(r).omega for r in stored}
    answered = {(r[0], r[1], r[2]) for r in
                fetch_by_ids(conn, "SELECT instance_id, x, y FROM points WHERE instance_id IN ({})", ids)}
    problems: list[str] = []
    rows: list[tuple] = []
    # An instance may get several questions in one step (a rejected mask's extra points), never the same
    # pixel twice; no question's alternates name a pixel another question of the batch asks.
    asked = {(iid, x, y) for iid, x, y in wanted if None not in (iid, x, y)}
    seen: set[tuple[int, int, int]] = set()
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
        elif (iid, x, y) in seen:
            problems.append(f"{where}: asked twice in step {step}; post each pixel of an instance once")
        else:
            seen.add((iid, x, y))
            alts, problem = _clean_alternates(iid, (x, y), alternates.get(iid, ()), windows[iid], answered | asked)
            if problem:
                problems.append(problem)
            rows.append((step, iid, x, y, json.dumps(alts), now))
    stray = sorted(set(alternates) - {iid for iid, _, _ in seen})
    if stray and not problems:
        problems.append(f"alternates given for instances {stray[:MAX_LISTED]} that have no question in this "
                        "batch; pass alternates only for the chosen instances")
    if problems:
        listed = "; ".join(problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise StoreError(f"refused all {len(wanted)} questions of step {step}, nothing was posted: {listed}{more}")
    return rows


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
        x, y = (as_int(v) for v in xy) if len(xy) == 2 else (None, None)
        if x is None or y is None:
            return [], f"instance {instance_id}: alternate {xy!r} is not an (x, y) pair of integer pixels"
        if not window.contains(x, y):
            return [], (f"instance {instance_id}: alternate pixel (x={x}, y={y}) lies outside the instance's Ω; "
                        "rank only pixels whose centres are in the box")
        if (x, y) != chosen and (x, y) not in out and (instance_id, x, y) not in answered:
            out.append((x, y))
    return out, None


# ---------------------------------------------------------------------- reading


def read_query(conn: sqlite3.Connection, query_id: int) -> StoredQuery:
    """The query with this id; :class:`QueryNotFound` when there is none."""
    qid = as_int(query_id)
    if qid is None:
        raise StoreError(f"query id must be an integer, got {query_id!r}")
    row = conn.execute(_QUERY_SELECT + " WHERE q.id = ?", (qid,)).fetchone()
    if row is None:
        raise QueryNotFound(f"there is no query {qid}; take query ids from the open questions (apis queue export)")
    return _stored_query(row)


def read_queries(conn: sqlite3.Connection, step: int | None = None, state: str | None = None) -> list[StoredQuery]:
    """Queries ordered by id, optionally only those of ``step`` and/or in ``state``."""
    where, args = [], []
    if step is not None:
        where.append("q.step = ?")
        args.append(step)
    if state is not None:
        where.append("q.state = ?")
        args.append(state)
    sql = _QUERY_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY q.id"
    return [_stored_query(r) for r in conn.execute(sql, args)]


def read_open_queries(
    conn: sqlite3.Connection, step: int | None = None, limit: int | None = None, exclude: Collection[int] = ()
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
    return [_stored_query(r) for r in conn.execute(sql, args)]


def _stored_query(row: Sequence[Any]) -> StoredQuery:
    qid, step, iid, image_id, category_id, x, y, strategy, state, alternates, replaces, annotator, closed, label = row
    alts = tuple((int(a), int(b)) for a, b in json.loads(alternates))
    return StoredQuery(qid, step, iid, image_id, category_id, x, y, strategy, state, alts, replaces, annotator,
                       closed, label)


# ---------------------------------------------------------------------- answering and undoing


def check_answer_args(answer: Any, annotator: Any) -> None:
    """:class:`StoreError` unless ``answer`` is one of :data:`ANSWERS` and ``annotator`` a non-empty string."""
    if answer not in ANSWERS:
        raise StoreError(f"answer {answer!r} is not one of {', '.join(ANSWERS)}; skip means \"can't tell\"")
    check_annotator(annotator)


def check_annotator(annotator: Any) -> None:
    """:class:`StoreError` unless ``annotator`` is a non-empty string."""
    if not isinstance(annotator, str) or not annotator:
        raise StoreError(f"annotator must be a non-empty string, got {annotator!r}")


def close_query(conn: sqlite3.Connection, query_id: int, answer: str, annotator: str, now: float) -> AnswerResult:
    """Inside a transaction: answer or skip one open query (see :meth:`apis.store.Store.answer_query`)."""
    query = read_query(conn, query_id)
    if query.state != "open":
        said = "skipped" if query.state == "skipped" else f"answered {query.answer!r}"
        raise QueryClosed(f"query {query.id} was already {said} by {query.annotator}; nothing changed",
                          query.as_dict())
    seq = conn.execute("SELECT COALESCE(MAX(closed_seq), 0) + 1 FROM queries").fetchone()[0]
    if answer != "skip":
        label = 1 if answer == "yes" else 0
        point = PointAnswer(query.instance_id, query.x, query.y, label, query.step, query.strategy, annotator, now)
        row = check_batch(conn, [point], now)[0]
        point_id = conn.execute(
            "INSERT INTO points(instance_id, step, x, y, label, strategy, annotator, answered_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row).lastrowid
        conn.execute("UPDATE queries SET state = 'answered', point_id = ?, annotator = ?, closed_at = ?, "
                     "closed_seq = ? WHERE id = ?", (point_id, annotator, now, seq, query.id))
        return AnswerResult(read_query(conn, query.id))
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
        replacement = read_query(conn, new_id)
    return AnswerResult(read_query(conn, query.id), replacement)


def close_all(
    conn: sqlite3.Connection, items: Sequence[tuple[int, str]], annotator: str, now: float
) -> list[AnswerResult]:
    """Inside a transaction: close every ``(query_id, answer)`` or raise :class:`BatchRefused`
    (see :meth:`apis.store.Store.answer_queries`); the caller rolls back on the error."""
    results: list[AnswerResult] = []
    problems: list[tuple[int, str]] = []
    for index, (query_id, answer) in enumerate(items):
        try:
            check_answer_args(answer, annotator)
            results.append(close_query(conn, query_id, answer, annotator, now))
        except QueryClosed as err:
            if err.stored.get("answer") != answer:
                problems.append((index, str(err)))
        except StoreError as err:
            problems.append((index, str(err)))
    if problems:
        raise BatchRefused(problems, len(items))
    return results


def close_each(
    conn: sqlite3.Connection, items: Sequence[tuple[int, str, str]], now: float
) -> list[AnswerResult | StoreError]:
    """Inside a transaction: close each ``(query_id, answer, annotator)`` on its own, a savepoint each
    (see :meth:`apis.store.Store.answer_each`)."""
    results: list[AnswerResult | StoreError] = []
    for query_id, answer, annotator in items:
        conn.execute("SAVEPOINT item")
        try:
            check_answer_args(answer, annotator)
            results.append(close_query(conn, query_id, answer, annotator, now))
        except StoreError as err:
            conn.execute("ROLLBACK TO item")
            results.append(err)
        conn.execute("RELEASE item")
    return results


def reopen_last(conn: sqlite3.Connection, annotator: str) -> UndoResult:
    """Inside a transaction: reopen ``annotator``'s most recent answer or skip
    (see :meth:`apis.store.Store.undo_last`)."""
    row = conn.execute("SELECT id, point_id FROM queries WHERE annotator = ? AND state != 'open' "
                       "ORDER BY closed_seq DESC LIMIT 1", (annotator,)).fetchone()
    if row is None:
        raise NothingToUndo(f"{annotator} has no answer to undo")
    query_id, point_id = row
    query = read_query(conn, query_id)
    if consumed(conn, query.step):
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
    return UndoResult(read_query(conn, query_id), removed)


# ---------------------------------------------------------------------- steps and progress


def posted(conn: sqlite3.Connection, step: int) -> bool:
    """Whether questions (possibly none) have been posted for ``step``."""
    return conn.execute("SELECT 1 FROM query_steps WHERE step = ?", (step,)).fetchone() is not None


def complete(conn: sqlite3.Connection, step: int) -> bool:
    """True when ``step`` has been posted and none of its queries is open any more."""
    return posted(conn, step) and conn.execute(
        "SELECT 1 FROM queries WHERE step = ? AND state = 'open' LIMIT 1", (step,)).fetchone() is None


def consumed(conn: sqlite3.Connection, step: int) -> bool:
    """True once :func:`mark_consumed` has recorded that the loop took the step's answers."""
    row = conn.execute("SELECT consumed_at FROM query_steps WHERE step = ?", (step,)).fetchone()
    return row is not None and row[0] is not None


def mark_consumed(
    conn: sqlite3.Connection, step: int, now: float, phase: str | None = None, phase_payload_json: str | None = None
) -> None:
    """Inside a transaction: record that the loop took the answers of a complete ``step``, and ``phase`` with it
    (see :meth:`apis.store.Store.consume_step`)."""
    if conn.execute("SELECT 1 FROM query_steps WHERE step = ?", (step,)).fetchone() is None:
        raise StoreError(f"step {step} has no posted questions; post them (apis.queue.post) before consuming")
    sql = "SELECT COUNT(*) FROM queries WHERE step = ? AND state = 'open'"
    n_open = conn.execute(sql, (step,)).fetchone()[0]
    if n_open:
        raise StoreError(f"step {step} still has {n_open} open questions; wait until people have answered them")
    conn.execute("UPDATE query_steps SET consumed_at = COALESCE(consumed_at, ?), phase = COALESCE(phase, ?) "
                 "WHERE step = ?", (now, phase, step))
    if phase is not None:
        write_phase(conn, phase, phase_payload_json, now)


def read_step_answers(conn: sqlite3.Connection, step: int) -> list[PointAnswer]:
    """The points people gave for ``step`` (skips have none), in query order."""
    sql = ("SELECT p.instance_id, p.x, p.y, p.label, p.step, p.strategy, p.annotator, p.answered_at "
           "FROM queries q JOIN points p ON p.id = q.point_id WHERE q.step = ? AND q.state = 'answered' "
           "ORDER BY q.id")
    return [PointAnswer(*r) for r in conn.execute(sql, (step,))]


def read_progress(conn: sqlite3.Connection, now: float, window_s: float) -> QueueProgress:
    """Counts over the steps not yet consumed, and how many questions were settled since ``now - window_s``."""
    steps = tuple(r[0] for r in conn.execute(
        "SELECT step FROM query_steps WHERE consumed_at IS NULL ORDER BY step"))
    if not steps:
        return QueueProgress((), 0, 0, 0, 0, 0.0)
    marks = ",".join("?" * len(steps))
    counts = dict(conn.execute(
        f"SELECT state, COUNT(*) FROM queries WHERE step IN ({marks}) GROUP BY state", steps).fetchall())
    replaced = conn.execute(
        f"SELECT COUNT(*) FROM queries WHERE step IN ({marks}) AND replaces IS NOT NULL", steps).fetchone()[0]
    settled = ("(q.state = 'answered' OR (q.state = 'skipped' AND NOT EXISTS "
               "(SELECT 1 FROM queries r WHERE r.replaces = q.id)))")
    recent, first = conn.execute(
        f"SELECT COUNT(*), MIN(q.closed_at) FROM queries q WHERE q.closed_at >= ? AND q.step IN ({marks}) "
        f"AND {settled}", (now - window_s, *steps)).fetchone()
    return QueueProgress(steps, counts.get("answered", 0), counts.get("skipped", 0) - replaced,
                         counts.get("open", 0), recent, 0.0 if first is None else now - first)
