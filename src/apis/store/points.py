"""Pool instances and the answered points on them: what the store holds, however the answers arrived.

Every batch of answers is checked whole against the stored instances and points before anything is
written (:func:`check_batch`), so a refused batch leaves no trace; the question queue (``queries.py``)
runs the same checks on each answer people give.
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apis.data.records import CocoDataset
from apis.geometry import PixelWindow, omega
from apis.store.errors import MAX_LISTED, StoreError
from apis.store.phases import write_phase

# SQLite caps the number of host parameters per statement; stay well below every build's limit.
_CHUNK = 500


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


# ---------------------------------------------------------------------- instances


def instance_rows(dataset: CocoDataset, split: str) -> list[tuple]:
    """The ``instances`` rows of the pool instances (no crowd) of ``dataset`` under ``split``."""
    return [
        (a.id, im.id, a.category_id, *(float(v) for v in a.box), im.width, im.height, split)
        for im in dataset.images
        for a in im.pool
    ]


def insert_instances(conn: sqlite3.Connection, rows: Sequence[tuple], source: Path) -> int:
    """Inside a transaction: insert the ``rows`` not stored yet (see :meth:`apis.store.Store.add_instances`).

    ``source`` is the annotation file the rows come from, named when an id is already stored differently.
    """
    existing = fetch_by_ids(conn, "SELECT * FROM instances WHERE id IN ({})", [r[0] for r in rows])
    known = {r[0]: tuple(r) for r in existing}
    new: dict[int, tuple] = {}
    for row in rows:
        before = known.get(row[0], new.get(row[0]))
        if before is None:
            new[row[0]] = row
        elif before != row:
            raise StoreError(
                f"instance {row[0]} is already stored as {_describe_row(before)} but "
                f"{source} has {_describe_row(row)}; annotation ids must be unique across "
                "files and splits: fix the annotation file or use a new project directory"
            )
    conn.executemany(f"INSERT INTO instances VALUES ({', '.join('?' * 10)})", list(new.values()))
    return len(new)


def read_instances(conn: sqlite3.Connection, split: str | None = None) -> list[StoredInstance]:
    """Stored instances ordered by id, optionally only those of ``split``."""
    if split is None:
        rows = conn.execute("SELECT * FROM instances ORDER BY id").fetchall()
    else:
        sql = "SELECT * FROM instances WHERE split = ? ORDER BY id"
        rows = conn.execute(sql, (split,)).fetchall()
    return [instance_from_row(r) for r in rows]


def instance_from_row(row: Sequence[Any]) -> StoredInstance:
    """The instance of an ``instances`` row (``SELECT *``)."""
    iid, image_id, category_id, x0, y0, x1, y1, width, height, split = row
    return StoredInstance(iid, image_id, category_id, (x0, y0, x1, y1), width, height, split)


def _describe_row(row: Sequence[Any]) -> str:
    _, image_id, category_id, x0, y0, x1, y1, width, height, split = row
    return (
        f"(image {image_id}, category {category_id}, box xyxy ({x0}, {y0}, {x1}, {y1}), "
        f"image {width}x{height}, split {split!r})"
    )


# ---------------------------------------------------------------------- points


def insert_points(
    conn: sqlite3.Connection,
    batch: Sequence[PointAnswer],
    now: float,
    phase: str | None = None,
    phase_payload_json: str | None = None,
) -> int:
    """Inside a transaction: store ``batch`` (see :meth:`apis.store.Store.add_points`); returns how many.

    When ``phase`` is given it is recorded with ``phase_payload_json`` (from :func:`apis.store.phases.payload_json`)
    in the same transaction.
    """
    rows = check_batch(conn, batch, now)
    conn.executemany(
        "INSERT INTO points(instance_id, step, x, y, label, strategy, annotator, answered_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    if phase is not None:
        write_phase(conn, phase, phase_payload_json, now)
    return len(rows)


def check_batch(conn: sqlite3.Connection, batch: Sequence[PointAnswer], now: float) -> list[tuple]:
    """Validate ``batch`` against the stored instances and points; returns rows ready to insert."""
    ids = sorted({i for i in (as_int(a.instance_id) for a in batch) if i is not None})
    stored = fetch_by_ids(conn, "SELECT * FROM instances WHERE id IN ({})", ids)
    windows = {r[0]: instance_from_row(r).omega for r in stored}
    sql = "SELECT instance_id, x, y, step FROM points WHERE instance_id IN ({})"
    labelled = fetch_by_ids(conn, sql, ids)
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


def read_points(conn: sqlite3.Connection, max_step: int | None = None) -> dict[int, list[StoredPoint]]:
    """Answers per instance id, each list ordered by step then insertion; only steps ≤ ``max_step``."""
    sql = "SELECT id, instance_id, step, x, y, label, strategy, annotator, answered_at FROM points"
    args: tuple = ()
    if max_step is not None:
        sql += " WHERE step <= ?"
        args = (max_step,)
    out: dict[int, list[StoredPoint]] = {}
    for row in conn.execute(sql + " ORDER BY step, id", args):
        point = StoredPoint(*row)
        out.setdefault(point.instance_id, []).append(point)
    return out


def count_points(conn: sqlite3.Connection, max_step: int | None = None) -> int:
    """Number of stored answers (steps ≤ ``max_step`` when given)."""
    if max_step is None:
        return conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    return conn.execute("SELECT COUNT(*) FROM points WHERE step <= ?", (max_step,)).fetchone()[0]


def answered_steps(conn: sqlite3.Connection) -> list[int]:
    """The steps that have at least one answer, ascending."""
    return [r[0] for r in conn.execute("SELECT DISTINCT step FROM points ORDER BY step")]


def _check_answer(
    answer: PointAnswer,
    windows: dict[int, PixelWindow],
    answered: dict[tuple[int, int, int], int],
    seen: set[tuple[int, int, int]],
    now: float,
) -> tuple[str | None, tuple]:
    """One answer's problem (None when fine) and its row for ``points``."""
    iid, x, y = as_int(answer.instance_id), as_int(answer.x), as_int(answer.y)
    label, step = as_int(answer.label), as_int(answer.step)
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
    listed = "; ".join(problems[:MAX_LISTED])
    more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"refused the whole batch of {size} answers, nothing was written: {listed}{more}"


# ---------------------------------------------------------------------- shared with the question queue


def fetch_by_ids(conn: sqlite3.Connection, sql: str, ids: Sequence[int]) -> list[tuple]:
    """Run ``sql`` (with one ``IN ({})`` placeholder) over ``ids`` in chunks."""
    rows: list[tuple] = []
    ids = list(ids)
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        rows.extend(conn.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall())
    return rows


def as_int(value: Any) -> int | None:
    """``value`` as an int when it is an integer type (numpy ints included, bools and floats not)."""
    if isinstance(value, bool):
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        return None
