"""Review decisions: a person looked at an exported mask and accepted it, sent it back for more points,
or skipped it.

Each decision is one row of ``reviews`` with the reviewer, the step whose export they saw and that mask
itself (its compressed RLE and a SHA-1 of it), so an accepted mask can be written again byte for byte at
every later step and a decision is always about the mask that was shown. Rows are never deleted: an undo
stamps ``undone_at``. An instance's *standing* decision is its latest row that is neither undone nor a
skip.

The functions run inside a transaction the caller (the :class:`apis.store.Store` facade) holds.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apis.store.errors import NothingToUndo, StoreError, UndoRefused

DECISIONS = ("accept", "reject", "skip")


@dataclass(frozen=True)
class ReviewDecision:
    """One stored decision. ``mask``: the compressed COCO RLE shown (``size`` [h, w], ``counts`` str),
    ``mask_sha1`` its digest (:func:`mask_digest`); ``apis_score`` the trust score shown beside it."""

    id: int
    instance_id: int
    step: int
    decision: str
    reviewer: str
    mask: dict
    mask_sha1: str
    apis_score: float | None
    decided_at: float
    undone_at: float | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "instance_id": self.instance_id, "step": self.step, "decision": self.decision,
                "reviewer": self.reviewer, "mask_sha1": self.mask_sha1, "apis_score": self.apis_score,
                "decided_at": self.decided_at, "undone_at": self.undone_at}


def canonical_rle(mask: Mapping[str, Any]) -> dict:
    """``{"size": [h, w], "counts": str}`` of a compressed RLE given with str or bytes counts; StoreError
    for anything else (an uncompressed RLE or a polygon is not what the export writes)."""
    if not isinstance(mask, Mapping):
        raise StoreError(f"mask must be a compressed RLE object, got {type(mask).__name__}")
    size, counts = mask.get("size"), mask.get("counts")
    if (not isinstance(size, list | tuple) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise StoreError(f"mask size must be [height, width] of positive integers, got {size!r}")
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, str) or not counts:
        raise StoreError("mask counts must be a compressed RLE string (as apis export masks writes)")
    return {"size": [int(size[0]), int(size[1])], "counts": counts}


def mask_digest(mask: Mapping[str, Any]) -> str:
    """SHA-1 of the canonical RLE's JSON: equal for the same mask, whatever the type of its counts."""
    return hashlib.sha1(json.dumps(canonical_rle(mask), sort_keys=True).encode()).hexdigest()


_SELECT = ("SELECT id, instance_id, step, decision, reviewer, mask, mask_sha1, apis_score, decided_at, undone_at "
           "FROM reviews")
# The same rows without the masks: what counting and ordering need, without parsing every RLE (a review page
# asks for these on every request).
_SELECT_LIGHT = _SELECT.replace(" mask,", " '{}',", 1)


def _decision(row: tuple) -> ReviewDecision:
    return ReviewDecision(int(row[0]), int(row[1]), int(row[2]), row[3], row[4], json.loads(row[5]), row[6],
                          None if row[7] is None else float(row[7]), float(row[8]),
                          None if row[9] is None else float(row[9]))


def check_decision(decision: Any, reviewer: Any, step: Any) -> None:
    """Refusals that need no database (made before the transaction)."""
    if decision not in DECISIONS:
        raise StoreError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise StoreError("reviewer must be a non-empty name")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise StoreError(f"step must be an integer ≥ 0, got {step!r}")


def insert_decision(conn: sqlite3.Connection, instance_id: int, step: int, decision: str, reviewer: str,
                    mask: Mapping[str, Any], apis_score: float | None, now: float) -> ReviewDecision:
    """Store one decision; the same decision sent again by the same reviewer about the same mask (a page
    retrying after a lost reply) returns the stored row instead of a second one."""
    row = conn.execute("SELECT split FROM instances WHERE id = ?", (instance_id,)).fetchone()
    if row is None:
        raise StoreError(f"instance {instance_id} is not in this project's store; review only exported pool "
                         "instances")
    rle = canonical_rle(mask)
    digest = mask_digest(rle)
    last = conn.execute(f"{_SELECT} WHERE instance_id = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1",
                        (instance_id,)).fetchone()
    if last is not None and (last[2], last[3], last[4], last[6]) == (step, decision, reviewer, digest):
        return _decision(last)
    cur = conn.execute(
        "INSERT INTO reviews(instance_id, step, decision, reviewer, mask, mask_sha1, apis_score, decided_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (instance_id, step, decision, reviewer, json.dumps(rle), digest,
         None if apis_score is None else float(apis_score), now))
    return _decision(conn.execute(f"{_SELECT} WHERE id = ?", (cur.lastrowid,)).fetchone())


def undo_decision(conn: sqlite3.Connection, reviewer: str, now: float) -> ReviewDecision:
    """Stamp the reviewer's latest standing row as undone and return it (with ``undone_at`` set).

    Refused once the loop has selected the next step's points (phase ``select_{step+1}``), since a
    rejection may have asked for points there; and refused when a later decision about the same instance
    (by anyone) stands on top of it.
    """
    row = conn.execute(f"{_SELECT} WHERE reviewer = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1",
                       (reviewer,)).fetchone()
    if row is None:
        raise NothingToUndo(f"{reviewer} has no review decision to undo")
    last = _decision(row)
    # The name apis.layout.select_phase gives (layout sits above the store, so it is spelled out here).
    if conn.execute("SELECT 1 FROM phases WHERE name = ?", (f"select_{last.step + 1}",)).fetchone():
        raise UndoRefused(f"the decision about instance {last.instance_id} was made at step {last.step} and the "
                          f"loop has selected step {last.step + 1}'s points since; review the object again instead")
    later = conn.execute("SELECT reviewer FROM reviews WHERE instance_id = ? AND id > ? AND undone_at IS NULL",
                         (last.instance_id, last.id)).fetchone()
    if later is not None:
        raise UndoRefused(f"{later[0]} has decided about instance {last.instance_id} since; review it again instead")
    conn.execute("UPDATE reviews SET undone_at = ? WHERE id = ?", (now, last.id))
    return ReviewDecision(**{**last.__dict__, "undone_at": now})


def standing_decisions(conn: sqlite3.Connection, max_step: int | None = None,
                       masks: bool = True) -> dict[int, ReviewDecision]:
    """Instance id → its latest accept or reject that is not undone (made at a step ≤ ``max_step``); with
    ``masks`` False each decision's ``mask`` is left empty (``mask_sha1`` still names it)."""
    sql = f"{_SELECT if masks else _SELECT_LIGHT} WHERE undone_at IS NULL AND decision != 'skip'"
    args: tuple = ()
    if max_step is not None:
        sql += " AND step <= ?"
        args = (max_step,)
    out: dict[int, ReviewDecision] = {}
    for row in conn.execute(sql + " ORDER BY id", args):
        out[int(row[1])] = _decision(row)
    return out


def decision_log(conn: sqlite3.Connection, step: int | None = None, masks: bool = True) -> list[ReviewDecision]:
    """Every row, undone ones included, in the order they were made (of one step when given); ``masks`` as in
    :func:`standing_decisions`."""
    select = _SELECT if masks else _SELECT_LIGHT
    if step is None:
        return [_decision(r) for r in conn.execute(f"{select} ORDER BY id")]
    return [_decision(r) for r in conn.execute(f"{select} WHERE step = ? ORDER BY id", (step,))]
