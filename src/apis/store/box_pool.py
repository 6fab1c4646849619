"""How far the drawing of boxes is, and the moment the drawn boxes become the pool (see :mod:`apis.store.boxes`).

Freezing is one transaction: it records the done images (the pool's) and the others (left out) as the phase
:data:`apis.store.boxes.FROZEN_PHASE`; from then on every box operation is refused, so whatever is built from
the pool afterwards (its COCO json, its instances, P0's questions) reads the same boxes however often it is
built again. The functions run inside a transaction the caller (the :class:`apis.store.Store` facade) holds.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from apis.store.boxes import FINISHED_PHASE, FROZEN_PHASE, BoxConflict, count_standing
from apis.store.phases import read_phase, write_phase


@dataclass(frozen=True)
class BoxPool:
    """The frozen pool: the done images that hold it, the images left out (not done), its boxes, when (unix s)."""

    images: tuple[int, ...]
    left_out: tuple[int, ...]
    boxes: int
    frozen_at: float

    def as_payload(self) -> dict:
        return {"images": list(self.images), "left_out": list(self.left_out), "boxes": self.boxes,
                "frozen_at": self.frozen_at}

    @classmethod
    def from_payload(cls, p: dict) -> BoxPool:
        return cls(tuple(p["images"]), tuple(p["left_out"]), int(p["boxes"]), float(p["frozen_at"]))


@dataclass(frozen=True)
class BoxProgress:
    """Images in all, done, and done with no box (a valid answer: nothing to box there); standing boxes on all
    images; whether the boxes are frozen into the pool, and whether the pool's P0 is posted (finished)."""

    images: int
    done: int
    empty_done: int
    boxes: int
    frozen: bool
    finished: bool

    def as_dict(self) -> dict:
        return {"images": self.images, "done": self.done, "remaining": self.images - self.done,
                "empty_done": self.empty_done, "boxes": self.boxes, "frozen": self.frozen, "finished": self.finished}


def read_progress(conn: sqlite3.Connection) -> BoxProgress:
    images, done = conn.execute("SELECT COUNT(*), COUNT(done_by) FROM box_images").fetchone()
    empty = conn.execute("SELECT COUNT(*) FROM box_images i WHERE done_by IS NOT NULL AND NOT EXISTS "
                         "(SELECT 1 FROM boxes b WHERE b.image_id = i.image_id AND b.deleted = 0)").fetchone()[0]
    return BoxProgress(int(images), int(done), int(empty), count_standing(conn),
                       read_phase(conn, FROZEN_PHASE) is not None, read_phase(conn, FINISHED_PHASE) is not None)


def freeze(conn: sqlite3.Connection, only_done: bool, now: float) -> BoxPool:
    """Freeze the boxes into the pool once; a later call returns that first pool whatever ``only_done`` says.
    Refused (:class:`BoxConflict`) while no image is done or no box stands on the done ones, or while some are not
    done unless ``only_done``: then those are left out of the pool."""
    stored = read_phase(conn, FROZEN_PHASE)
    if stored is not None:
        return BoxPool.from_payload(stored)
    done = [i for (i,) in conn.execute("SELECT image_id FROM box_images WHERE done_by IS NOT NULL ORDER BY image_id")]
    waiting = [i for (i,) in conn.execute("SELECT image_id FROM box_images WHERE done_by IS NULL ORDER BY image_id")]
    if not done:
        raise BoxConflict(f"none of the {len(waiting)} images is done yet; draw their boxes with `apis serve PROJECT` "
                          "and mark each image done (Enter)")
    if waiting and not only_done:
        raise BoxConflict(f"{len(waiting)} of {len(done) + len(waiting)} images are not done yet (e.g. image "
                          f"{waiting[0]}); finish them on the box page, or pass --only-done to leave them out of "
                          "the pool")
    boxes = conn.execute("SELECT COUNT(*) FROM boxes b JOIN box_images i ON i.image_id = b.image_id "
                         "WHERE b.deleted = 0 AND i.done_by IS NOT NULL").fetchone()[0]
    if boxes == 0:
        raise BoxConflict(f"no box stands on the {len(done)} done images; a pool needs objects: draw their boxes "
                          "(undo a done image with z on the box page)")
    pool = BoxPool(tuple(done), tuple(waiting), int(boxes), now)
    write_phase(conn, FROZEN_PHASE, json.dumps(pool.as_payload(), sort_keys=True), now)
    return pool


def frozen(conn: sqlite3.Connection) -> BoxPool | None:
    """The frozen pool, or None while the boxes can still change."""
    stored = read_phase(conn, FROZEN_PHASE)
    return None if stored is None else BoxPool.from_payload(stored)
