"""Boxes people draw, for a project that starts from images alone (``apis init PROJECT --images DIR``).

Frame: a box is ``(x0, y0, x1, y1)`` floats in pixels of the image as shown (EXIF orientation applied), pixel
(col i, row j) covering [i, i+1) × [j, j+1): the whole image is ``(0, 0, width, height)``. A box is clipped to
its image and must then be at least 1 px wide and high (:class:`BoxRefused` otherwise).

Every operation is one row of ``box_ops`` carrying the client's own ``op_id`` (unique): ``add`` a box, ``change``
its geometry and category, ``delete`` it, mark its image ``done``, or ``undo`` the annotator's latest operation
not undone yet. An operation sent again with the same id (a retry after a lost reply) changes nothing and
returns the image as it stands; the same id with another request is refused. Rows are never deleted: a deleted
box keeps its row (``deleted`` = 1), so an undo can bring it back. Once the boxes are *frozen* into the pool
(:func:`apis.store.box_pool.freeze`, recorded as the phase :data:`FROZEN_PHASE`) every operation is refused.

The functions run inside a transaction the caller (the :class:`apis.store.Store` facade) holds.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from apis.store.errors import NothingToUndo, StoreError, UndoRefused
from apis.store.phases import read_phase

KINDS = ("add", "change", "delete", "done")
"""The operations :func:`apply` stores (an undo has its own function)."""
FROZEN_PHASE = "boxes_frozen"
"""Phase recorded when the boxes become the pool; its payload is :meth:`BoxPool.as_payload`."""
FINISHED_PHASE = "boxes_finished"
"""Phase recorded once the pool's json is written and its P0 questions are posted."""
MIN_SIDE = 1.0
"""Pixels a box must span in each direction, after clipping."""


class BoxRefused(StoreError):
    """A box that cannot be stored as sent (outside the image, under 1 px, unknown category): HTTP 422."""


class BoxConflict(StoreError):
    """An operation that contradicts the stored state (image done, pool frozen, op id reused): HTTP 409."""


class BoxNotFound(StoreError):
    """No such image or box: HTTP 404."""


@dataclass(frozen=True)
class DrawnBox:
    """A standing box: ``box`` xyxy in shown-image pixels, drawn by ``annotator`` at ``drawn_at`` (unix s)."""

    id: int
    image_id: int
    category_id: int
    box: tuple[float, float, float, float]
    annotator: str
    drawn_at: float

    def as_dict(self) -> dict:
        return {"id": self.id, "image_id": self.image_id, "category_id": self.category_id, "box": list(self.box),
                "annotator": self.annotator}


@dataclass(frozen=True)
class BoxImage:
    """An image of the project, its size as shown, whether it is done (by whom) and its standing boxes."""

    image_id: int
    file_name: str
    width: int
    height: int
    done_by: str | None
    done_at: float | None
    boxes: tuple[DrawnBox, ...]

    @property
    def done(self) -> bool:
        return self.done_by is not None


@dataclass(frozen=True)
class BoxRequest:
    """One operation as a client sends it: ``add`` (``image_id``, ``box``, ``category_id``), ``change``
    (``box_id``, ``box``, ``category_id``), ``delete`` (``box_id``) or ``done`` (``image_id``)."""

    op_id: str
    annotator: str
    kind: str
    image_id: int | None = None
    box_id: int | None = None
    box: tuple[float, float, float, float] | None = None
    category_id: int | None = None

    def key(self) -> str:
        """The request as stored, to tell a retry (same text) from a reused op id."""
        return json.dumps({"kind": self.kind, "image_id": self.image_id, "box_id": self.box_id,
                           "box": None if self.box is None else [float(v) for v in self.box],
                           "category_id": self.category_id}, sort_keys=True)


@dataclass(frozen=True)
class BoxResult:
    """What an operation did: its sequence number, the box it touched (None for ``done``), the operation it undid
    (``undo`` only), the image as it stands now, whether it was a retry of a stored operation, and whether every
    image of the project is done now."""

    seq: int
    kind: str
    box_id: int | None
    undid: int | None
    image: BoxImage
    replayed: bool
    all_done: bool


# ---------------------------------------------------------------------- the project's images


def insert_images(conn: sqlite3.Connection, rows: Sequence[tuple[int, str, int, int]], meta: dict) -> int:
    """Store the project's images ``(image_id, file_name, width, height)`` and its box settings ``meta``
    (``categories`` [[id, name], ...], ``seed``); the same rows again add nothing; others are refused."""
    stored = conn.execute("SELECT value FROM meta WHERE key = 'box_project'").fetchone()
    if stored is not None and json.loads(stored[0]) != meta:
        raise StoreError("this store holds another box project (other categories or seed); use a new project folder")
    known = {r[0]: tuple(r) for r in conn.execute("SELECT image_id, file_name, width, height FROM box_images")}
    new = []
    for row in rows:
        row = (int(row[0]), str(row[1]), int(row[2]), int(row[3]))
        if row[0] in known and known[row[0]] != row:
            raise StoreError(f"image {row[0]} is stored as {known[row[0]][1]} but is given as {row[1]}; use a new "
                             "project folder")
        if row[0] not in known:
            new.append(row)
    conn.executemany("INSERT INTO box_images(image_id, file_name, width, height) VALUES (?, ?, ?, ?)", new)
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('box_project', ?)", (json.dumps(meta),))
    return len(new)


def read_meta(conn: sqlite3.Connection) -> dict | None:
    """The box settings of :func:`insert_images`, or None when the project did not start from images."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'box_project'").fetchone()
    return None if row is None else json.loads(row[0])


def read_image(conn: sqlite3.Connection, image_id: int) -> BoxImage:
    row = conn.execute("SELECT image_id, file_name, width, height, done_by, done_at FROM box_images "
                       "WHERE image_id = ?", (image_id,)).fetchone()
    if row is None:
        raise BoxNotFound(f"there is no image {image_id} in this project")
    return _image(row, _boxes(conn, "WHERE deleted = 0 AND image_id = ?", (image_id,)))


def read_images(conn: sqlite3.Connection, done: bool | None = None, limit: int | None = None,
                exclude: Sequence[int] = ()) -> list[BoxImage]:
    """Images by id, all or only the done (``done`` True) or waiting ones, leaving out ``exclude``."""
    where = "" if done is None else f"WHERE done_by IS {'NOT ' if done else ''}NULL"
    rows = conn.execute(f"SELECT image_id, file_name, width, height, done_by, done_at FROM box_images {where} "
                        "ORDER BY image_id").fetchall()
    skip = set(exclude)
    rows = [r for r in rows if r[0] not in skip][:limit]
    by_image: dict[int, list[DrawnBox]] = {}
    ids = [r[0] for r in rows]
    for i in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
        chunk = ids[i : i + 500]
        for b in _boxes(conn, f"WHERE deleted = 0 AND image_id IN ({','.join('?' * len(chunk))})", tuple(chunk)):
            by_image.setdefault(b.image_id, []).append(b)
    return [_image(r, by_image.get(r[0], [])) for r in rows]


def count_standing(conn: sqlite3.Connection) -> int:
    """Boxes people drew that stand (neither deleted nor undone)."""
    return int(conn.execute("SELECT COUNT(*) FROM boxes WHERE deleted = 0").fetchone()[0])


# ---------------------------------------------------------------------- operations


def apply(conn: sqlite3.Connection, req: BoxRequest, now: float) -> BoxResult:
    """Store one operation (see the module doc); returns its result, or the stored one for a retry."""
    replay = _replay(conn, req.op_id, req.annotator, req.key())
    if replay is not None:
        return replay
    _check_open(conn)
    if req.kind in ("change", "delete"):
        old = read_box(conn, req.box_id)
        image_id = old["image_id"]
    else:
        old, image_id = None, req.image_id
    image = read_image(conn, image_id)
    if image.done:
        raise BoxConflict(f"image {image_id} is marked done by {image.done_by}; undo that to change its boxes")
    box_id, before, after = req.box_id, None, None
    if req.kind in ("add", "change"):
        box = clip(req.box, image.width, image.height)
        _check_category(conn, req.category_id)
        after = {"box": list(box), "category_id": req.category_id, "deleted": False}
        if req.kind == "add":
            box_id = conn.execute("INSERT INTO boxes(image_id, category_id, x0, y0, x1, y1, annotator, drawn_at) "
                                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  (image_id, req.category_id, *box, req.annotator, now)).lastrowid
        else:
            before = _state(old)
            _write_box(conn, box_id, after)
    elif req.kind == "delete":
        before = _state(old)
        after = {**before, "deleted": True}
        _write_box(conn, box_id, after)
    else:  # done
        conn.execute("UPDATE box_images SET done_by = ?, done_at = ? WHERE image_id = ?",
                     (req.annotator, now, image_id))
        after = {"done_by": req.annotator}
    seq = _log(conn, req.op_id, req.annotator, req.kind, image_id, box_id, req.key(), before, after, now)
    return BoxResult(seq, req.kind, box_id, None, read_image(conn, image_id), False, _all_done(conn))


def undo(conn: sqlite3.Connection, op_id: str, annotator: str, now: float) -> BoxResult:
    """Undo ``annotator``'s latest operation not undone yet (again: the one before): a drawn box goes, a changed
    one is put back, a deleted one returns, a done image is open again. :class:`NothingToUndo` when there is none;
    :class:`UndoRefused` when someone changed that box or image since."""
    key = json.dumps({"kind": "undo"})
    replay = _replay(conn, op_id, annotator, key)
    if replay is not None:
        return replay
    _check_open(conn)
    row = conn.execute("SELECT seq, kind, image_id, box_id, before, after FROM box_ops WHERE annotator = ? AND "
                       "kind != 'undo' AND undone_by IS NULL ORDER BY seq DESC LIMIT 1", (annotator,)).fetchone()
    if row is None:
        raise NothingToUndo(f"{annotator} has no box operation left to undo")
    seq, kind, image_id, box_id = row[:4]
    before, after = (None if v is None else json.loads(v) for v in row[4:])
    image = read_image(conn, image_id)
    if kind == "done":
        if image.done_by != annotator:
            raise UndoRefused(f"image {image_id} is no longer marked done by {annotator}")
        conn.execute("UPDATE box_images SET done_by = NULL, done_at = NULL WHERE image_id = ?", (image_id,))
    else:
        if image.done:
            raise UndoRefused(f"image {image_id} was marked done by {image.done_by} since; they can undo that first")
        if _raw(read_box(conn, box_id)) != after:
            raise UndoRefused(f"box {box_id} was changed by someone else since; undo refused")
        _write_box(conn, box_id, {**after, "deleted": True} if kind == "add" else before)
    new = _log(conn, op_id, annotator, "undo", image_id, box_id, key, after, before, now)
    conn.execute("UPDATE box_ops SET undone_by = ? WHERE seq = ?", (new, seq))
    return BoxResult(new, "undo", box_id, seq, read_image(conn, image_id), False, _all_done(conn))


def clip(box: Sequence[float] | None, width: int, height: int) -> tuple[float, float, float, float]:
    """``box`` (xyxy) clipped to the ``width`` × ``height`` image; :class:`BoxRefused` unless it then spans at
    least :data:`MIN_SIDE` px each way with x0 < x1 and y0 < y1."""
    if box is None or len(box) != 4 or not all(isinstance(v, int | float) and math.isfinite(v) for v in box):
        raise BoxRefused(f"a box must be 4 finite numbers [x0, y0, x1, y1], got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = min(max(x0, 0.0), float(width)), min(max(x1, 0.0), float(width))
    y0, y1 = min(max(y0, 0.0), float(height)), min(max(y1, 0.0), float(height))
    if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
        raise BoxRefused(f"box {list(box)} is {x1 - x0:g} × {y1 - y0:g} px inside the {width}×{height} image; a box "
                         f"must span at least {MIN_SIDE:g} px each way inside the image, with x0 < x1 and y0 < y1")
    return x0, y0, x1, y1


# ---------------------------------------------------------------------- helpers


def _check_open(conn: sqlite3.Connection) -> None:
    if read_phase(conn, FROZEN_PHASE) is not None:
        raise BoxConflict("the boxes are the pool now (`apis boxes finish` or the last image done); they can no "
                          "longer change: answer the point questions instead")


def _check_category(conn: sqlite3.Connection, category_id: int | None) -> None:
    meta = read_meta(conn) or {}
    known = [c[0] for c in meta.get("categories", [])]
    if category_id not in known:
        raise BoxRefused(f"category {category_id!r} is not one of the project's categories {known}")


def _replay(conn: sqlite3.Connection, op_id: str, annotator: str, key: str) -> BoxResult | None:
    row = conn.execute("SELECT seq, annotator, kind, image_id, box_id, request FROM box_ops WHERE op_id = ?",
                       (op_id,)).fetchone()
    if row is None:
        return None
    seq, who, kind, image_id, box_id, request = row
    if (who, request) != (annotator, key):
        raise BoxConflict(f"operation id {op_id!r} was used before for another request; send a fresh id per operation")
    undid = conn.execute("SELECT seq FROM box_ops WHERE undone_by = ?", (seq,)).fetchone() if kind == "undo" else None
    return BoxResult(seq, kind, box_id, None if undid is None else undid[0], read_image(conn, image_id), True,
                     _all_done(conn))


def _log(conn, op_id, annotator, kind, image_id, box_id, key, before, after, now) -> int:
    return conn.execute("INSERT INTO box_ops(op_id, annotator, kind, image_id, box_id, request, before, after, at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (op_id, annotator, kind, image_id, box_id, key,
                         None if before is None else json.dumps(before), None if after is None else json.dumps(after),
                         now)).lastrowid


def read_box(conn: sqlite3.Connection, box_id: int | None) -> dict:
    """A box's row (``deleted`` too) as a dict; :class:`BoxNotFound` when there is none."""
    row = conn.execute("SELECT id, image_id, category_id, x0, y0, x1, y1, deleted FROM boxes WHERE id = ?",
                       (box_id,)).fetchone()
    if row is None:
        raise BoxNotFound(f"there is no box {box_id}")
    return {"id": row[0], "image_id": row[1], "category_id": row[2], "box": list(row[3:7]), "deleted": bool(row[7])}


def _raw(row: dict) -> dict:
    return {"box": row["box"], "category_id": row["category_id"], "deleted": row["deleted"]}


def _state(row: dict) -> dict:
    """A standing box's state; a deleted one cannot be changed or deleted again."""
    if row["deleted"]:
        raise BoxConflict(f"box {row['id']} is deleted; undo the delete to bring it back")
    return _raw(row)


def _write_box(conn: sqlite3.Connection, box_id: int, state: dict) -> None:
    conn.execute("UPDATE boxes SET category_id = ?, x0 = ?, y0 = ?, x1 = ?, y1 = ?, deleted = ? WHERE id = ?",
                 (state["category_id"], *state["box"], int(state["deleted"]), box_id))


def _boxes(conn: sqlite3.Connection, where: str, args: tuple) -> list[DrawnBox]:
    rows = conn.execute("SELECT id, image_id, category_id, x0, y0, x1, y1, annotator, drawn_at FROM boxes "
                        f"{where} ORDER BY id", args).fetchall()
    return [DrawnBox(r[0], r[1], r[2], (r[3], r[4], r[5], r[6]), r[7], r[8]) for r in rows]


def _image(row: tuple, boxes: Sequence[DrawnBox]) -> BoxImage:
    return BoxImage(row[0], row[1], row[2], row[3], row[4], row[5], tuple(boxes))


def _all_done(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT COUNT(*) FROM box_images WHERE done_by IS NULL").fetchone()[0] == 0
