"""The project's answers on disk: one SQLite file per project directory, behind the :class:`Store` facade.

One module per concern, each holding its dataclasses and plain functions over a ``sqlite3.Connection``:
``schema.py`` (tables, connection set-up, migrations), ``errors.py`` (the refusals), ``points.py`` (pool
instances and answered points), ``phases.py`` (completed phases of the loop), ``queries.py`` (the
question queue: post, answer, skip, undo, progress), ``reviews.py`` (people's decisions about exported
masks), ``boxes.py`` and ``box_pool.py`` (boxes people draw on a project that starts from images alone, and
the moment they become the pool) and ``coco.py`` (COCO import and export). Modules
import only downward: errors and schema at the bottom, this facade on top.

:class:`Store` owns the connection and the transactions; its methods read the clock, check arguments that
need no database, and call one function inside one transaction, so the transaction boundaries of the
store are all in this file. Every write is one transaction in WAL mode with ``synchronous=FULL``: after a
crash the file holds exactly the batches whose ``add_points`` call returned, never part of a batch.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apis.data.records import CocoDataset
from apis.names import RANDOM_STRATEGY
from apis.store.box_pool import BoxPool, BoxProgress, freeze, frozen
from apis.store.box_pool import read_progress as read_box_progress
from apis.store.boxes import (
    FINISHED_PHASE,
    BoxConflict,
    BoxImage,
    BoxNotFound,
    BoxRefused,
    BoxRequest,
    BoxResult,
    DrawnBox,
    apply,
    count_standing,
    insert_images,
    read_box,
    read_image,
    read_images,
    read_meta,
    undo,
)
from apis.store.boxes import KINDS as BOX_KINDS
from apis.store.coco import export_points, read_answers
from apis.store.errors import (
    BatchRefused,
    NothingToUndo,
    QueryClosed,
    QueryNotFound,
    StepConsumed,
    StoreError,
    UndoRefused,
)
from apis.store.phases import completed_phases, payload_json, read_phase, write_phase
from apis.store.points import (
    PointAnswer,
    StoredInstance,
    StoredPoint,
    answered_steps,
    count_points,
    insert_instances,
    insert_points,
    instance_rows,
    read_instances,
    read_points,
)
from apis.store.queries import (
    ANSWERS,
    AnswerResult,
    QueueProgress,
    StoredQuery,
    UndoResult,
    check_annotator,
    check_answer_args,
    check_post_args,
    close_all,
    close_each,
    close_query,
    complete,
    consumed,
    insert_queries,
    mark_consumed,
    posted,
    read_open_queries,
    read_progress,
    read_queries,
    read_query,
    read_step_answers,
    reopen_last,
)
from apis.store.reviews import (
    DECISIONS,
    ReviewDecision,
    check_decision,
    decision_log,
    insert_decision,
    standing_decisions,
    undo_decision,
)
from apis.store.schema import DB_NAME, SCHEMA_VERSION, configure, create_or_migrate


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
            configure(conn, path)
            store = cls(conn, path)
            with store._transaction() as tx:
                create_or_migrate(tx, path)
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

    # ------------------------------------------------------------------ instances

    def add_instances(self, dataset: CocoDataset, split: str) -> int:
        """Store the pool instances (no crowd) of ``dataset`` under ``split``; returns how many were new.

        Idempotent: instances already stored with the same image, category, box, image size and split are
        skipped. An id already stored with different values raises :class:`StoreError` and nothing is
        written.
        """
        rows = instance_rows(dataset, split)
        with self._transaction() as conn:
            return insert_instances(conn, rows, dataset.json_path)

    def instances(self, split: str | None = None) -> list[StoredInstance]:
        """Stored instances ordered by id, optionally only those of ``split``."""
        return read_instances(self._conn, split)

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
        payload = payload_json(phase, phase_payload) if phase is not None else None
        with self._transaction() as conn:
            return insert_points(conn, batch, now, phase, payload)

    def points(self, max_step: int | None = None) -> dict[int, list[StoredPoint]]:
        """Answers per instance id, each list ordered by step then insertion; only steps ≤ ``max_step``."""
        return read_points(self._conn, max_step)

    def random_answers(self, max_step: int | None = None) -> dict[int, list[tuple[int, int, int]]]:
        """(x, y, label) per instance id of the answers at points drawn at random inside the box (strategy
        ``"random"``: P0's, and every step's of a Random arm), steps ≤ ``max_step``. They alone say how often a
        mask source is right over the whole box: a strategy that asks where the model is unsure asks at the
        objects' edges, where every shape errs (DSB 2018, Entropy arm: the ellipse agreed with 68–72% of all
        answers after P1, with 84% of the random ones)."""
        return {i: kept for i, ps in self.points(max_step).items()
                if (kept := [(p.x, p.y, p.label) for p in ps if p.strategy == RANDOM_STRATEGY])}

    def point_count(self, max_step: int | None = None) -> int:
        """Number of stored answers (steps ≤ ``max_step`` when given)."""
        return count_points(self._conn, max_step)

    def steps(self) -> list[int]:
        """The steps that have at least one answer, ascending."""
        return answered_steps(self._conn)

    # ------------------------------------------------------------------ phases

    def mark_phase(self, name: str, payload: dict) -> None:
        """Record phase ``name`` as completed with a json-serialisable ``payload`` (replaces earlier ones)."""
        text = payload_json(name, payload)
        with self._transaction() as conn:
            write_phase(conn, name, text, time.time())

    def phase(self, name: str) -> dict | None:
        """The payload recorded for a completed phase, or None if it has not completed."""
        return read_phase(self._conn, name)

    def phase_names(self) -> list[str]:
        """Completed phases in the order they were (last) recorded."""
        return completed_phases(self._conn)

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
        wanted = check_post_args(step, strategy, choices)
        alternates = dict(alternates or {})
        now = time.time()
        with self._transaction() as conn:
            return insert_queries(conn, step, wanted, strategy, alternates, now)

    def query(self, query_id: int) -> StoredQuery:
        """The query with this id; :class:`QueryNotFound` when there is none."""
        return read_query(self._conn, query_id)

    def queries(self, step: int | None = None, state: str | None = None) -> list[StoredQuery]:
        """Queries ordered by id, optionally only those of ``step`` and/or in ``state``."""
        return read_queries(self._conn, step, state)

    def open_queries(
        self, step: int | None = None, limit: int | None = None, exclude: Collection[int] = ()
    ) -> list[StoredQuery]:
        """Open queries ordered by id (oldest first), optionally of one ``step``, leaving out ids in ``exclude``."""
        return read_open_queries(self._conn, step, limit, exclude)

    def answer_query(self, query_id: int, answer: str, annotator: str, now: float | None = None) -> AnswerResult:
        """Close an open query with ``answer`` (``yes``, ``no`` or ``skip``) given by ``annotator``.

        Yes/no store a point (label 1/0, the query's step and strategy, ``annotator``) and close the query in
        one transaction. Skip closes it as skipped and, in the same transaction, posts the first alternate
        pixel without an answer as a new open query (none left: the instance gets no point this step).
        Raises :class:`QueryNotFound`, :class:`QueryClosed` (carrying the stored answer), or
        :class:`StoreError` for a bad answer or a pixel answered meanwhile by other means.
        """
        check_answer_args(answer, annotator)
        with self._transaction() as conn:
            return close_query(conn, int(query_id), answer, annotator, time.time() if now is None else now)

    def answer_queries(self, items: Sequence[tuple[int, str]], annotator: str) -> list[AnswerResult]:
        """Close many queries in one transaction (all or nothing); ``items`` are ``(query_id, answer)``.

        A query already closed with the same answer is left as it is (so a file can be imported twice);
        anything else that :meth:`answer_query` refuses refuses the whole batch with :class:`BatchRefused`,
        whose ``problems`` pair each refused item's index in ``items`` with the reason.
        """
        check_annotator(annotator)
        now = time.time()
        with self._transaction() as conn:
            return close_all(conn, items, annotator, now)

    def answer_each(self, items: Sequence[tuple[int, str, str]]) -> list[AnswerResult | StoreError]:
        """Answers from several people in one transaction (one disk sync), each accepted or refused on its own.

        ``items`` are ``(query_id, answer, annotator)``; the result in each slot is what :meth:`answer_query`
        would return, or the :class:`StoreError` it would raise (nothing of that item is written). Meant for a
        server that commits the answers arriving together as a group before replying to each.
        """
        now = time.time()
        with self._transaction() as conn:
            return close_each(conn, items, now)

    def undo_last(self, annotator: str) -> UndoResult:
        """Reopen ``annotator``'s most recent answer or skip: its point is deleted (after a skip, the replacement
        query is removed instead). Calling it again undoes the answer before, and so on.

        Raises :class:`NothingToUndo`, :class:`StepConsumed` once the loop has taken the step's answers, or
        :class:`UndoRefused` when a skip's replacement has been answered already.
        """
        with self._transaction() as conn:
            return reopen_last(conn, annotator)

    def step_posted(self, step: int) -> bool:
        """Whether questions (possibly none) have been posted for ``step``."""
        return posted(self._conn, step)

    def step_complete(self, step: int) -> bool:
        """True when ``step`` has been posted and none of its queries is open any more."""
        return complete(self._conn, step)

    def step_consumed(self, step: int) -> bool:
        """True once :meth:`consume_step` has recorded that the loop took the step's answers."""
        return consumed(self._conn, step)

    def consume_step(self, step: int, phase: str | None = None, phase_payload: dict | None = None) -> None:
        """Record that the loop has taken the answers of a complete ``step``; from then on none can be undone.

        When ``phase`` is given it is marked complete (as :meth:`mark_phase`) in the same transaction. Idempotent.
        Refuses (:class:`StoreError`) a step never posted or with open queries.
        """
        payload = payload_json(phase, phase_payload) if phase is not None else None
        now = time.time()
        with self._transaction() as conn:
            mark_consumed(conn, step, now, phase, payload)

    def answers_for_step(self, step: int) -> list[PointAnswer]:
        """The points people gave for ``step`` (skips have none), in query order."""
        return read_step_answers(self._conn, step)

    def queue_progress(self, now: float | None = None, window_s: float = 300.0) -> QueueProgress:
        """Counts over the steps not yet consumed, and how many questions were settled in the last ``window_s``."""
        return read_progress(self._conn, time.time() if now is None else now, window_s)

    # ------------------------------------------------------------------ COCO exchange

    def export_coco(self, dataset_json: Path | str, out: Path | str, max_step: int | None = None) -> int:
        """Write ``dataset_json`` to ``out`` with each stored instance's answers (steps ≤ ``max_step``).

        Every annotation that is a stored instance gets ``point_coords`` ``[[x, y], ...]`` (integer pixels,
        x = column, y = row of the original image) and ``point_labels`` ``[0/1, ...]`` — detectron2
        PointSup's format — possibly empty. Other annotations (crowd, other splits) are left as they are.
        The file is replaced atomically. Returns the number of points written.
        """
        return export_points(self._conn, Path(dataset_json), Path(out), max_step)

    def import_coco(
        self, path: Path | str, step: int, strategy: str = "imported", annotator: str = "import"
    ) -> int:
        """Add the ``point_coords``/``point_labels`` of a COCO file as answers of ``step``; returns how many.

        The whole file is one batch with the checks of :meth:`add_points`; errors name the file and the
        annotation id.
        """
        path = Path(path)
        answers = read_answers(path, step, strategy, annotator)
        try:
            return self.add_points(answers)
        except StoreError as err:
            raise StoreError(f"{path}: {err} (instance ids are the file's annotation ids)") from None

    # ------------------------------------------------------------------ review decisions

    def add_review(self, instance_id: int, step: int, decision: str, reviewer: str, mask: Mapping[str, Any],
                   apis_score: float | None = None, now: float | None = None) -> ReviewDecision:
        """Store one review decision (``accept``, ``reject`` or ``skip``) about the mask of ``instance_id``
        that M(``step``)'s export showed ``reviewer``: ``mask`` is that compressed RLE, kept so an accepted
        mask is exported unchanged later. One transaction; the same decision sent twice is stored once.
        """
        check_decision(decision, reviewer, step)
        now = time.time() if now is None else now
        with self._transaction() as conn:
            return insert_decision(conn, int(instance_id), step, decision, reviewer, mask, apis_score, now)

    def add_reviews(self, items: Sequence[tuple[int, int, str, Mapping[str, Any], float | None]], reviewer: str,
                    now: float | None = None) -> list[ReviewDecision]:
        """Store a batch of ``(instance_id, step, decision, mask, apis_score)`` decisions by ``reviewer`` in one
        transaction: all of them or, when any is refused (:class:`StoreError` naming it), none. A decision
        already standing as sent is returned as stored, not stored twice (a file imported again)."""
        for _, step, decision, _, _ in items:
            check_decision(decision, reviewer, step)
        now = time.time() if now is None else now
        with self._transaction() as conn:
            out = []
            for n, (instance_id, step, decision, mask, score) in enumerate(items):
                try:
                    out.append(insert_decision(conn, int(instance_id), step, decision, reviewer, mask, score, now))
                except StoreError as err:
                    raise StoreError(f"item {n} (instance {instance_id}): {err}; nothing was stored") from None
            return out

    def undo_review(self, reviewer: str, now: float | None = None) -> ReviewDecision:
        """Undo ``reviewer``'s latest standing decision (:class:`NothingToUndo` if none; :class:`UndoRefused`
        once the loop has acted on it or someone decided about the object since). Returns it, undone."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            return undo_decision(conn, reviewer, now)

    def reviews(self, max_step: int | None = None, masks: bool = True) -> dict[int, ReviewDecision]:
        """Instance id → its standing decision (the latest accept or reject not undone, of steps ≤ ``max_step``).
        ``masks`` False leaves each ``mask`` empty (cheaper when only the decisions count)."""
        return standing_decisions(self._conn, max_step, masks)

    def review_log(self, step: int | None = None, masks: bool = True) -> list[ReviewDecision]:
        """Every decision ever made (undone ones too), oldest first; of one step when given; ``masks`` as in
        :meth:`reviews`."""
        return decision_log(self._conn, step, masks)

    # ------------------------------------------------------------------ boxes people draw (apis.store.boxes)

    def add_box_images(self, rows: Sequence[tuple[int, str, int, int]], categories: Sequence[tuple[int, str]],
                       seed: int) -> int:
        """Start a project from images alone: its images ``(image_id, file_name, width, height)`` (size as shown,
        EXIF orientation applied), the ``categories`` ``(id, name)`` boxes may have, and the ``seed`` of P0.
        Idempotent; returns how many images were new."""
        meta = {"categories": [[int(i), str(n)] for i, n in categories], "seed": int(seed)}
        with self._transaction() as conn:
            return insert_images(conn, rows, meta)

    def box_project(self) -> dict | None:
        """``{"categories": [[id, name], ...], "seed": s}`` of a project started from images, else None."""
        return read_meta(self._conn)

    def box_op(self, request: BoxRequest, now: float | None = None) -> BoxResult:
        """Store one box operation (add, change, delete, done) in one transaction; a retry with the same op id
        returns the stored result. :class:`BoxRefused` (a bad box), :class:`BoxNotFound`, :class:`BoxConflict`."""
        if request.kind not in BOX_KINDS:
            raise BoxRefused(f"unknown box operation {request.kind!r}; use add, change, delete or done")
        check_annotator(request.annotator)
        with self._transaction() as conn:
            return apply(conn, request, time.time() if now is None else now)

    def undo_box(self, annotator: str, op_id: str, now: float | None = None) -> BoxResult:
        """Undo ``annotator``'s latest box operation not undone yet (:func:`apis.store.boxes.undo`)."""
        check_annotator(annotator)
        with self._transaction() as conn:
            return undo(conn, op_id, annotator, time.time() if now is None else now)

    def box_image(self, image_id: int) -> BoxImage:
        """One image with its standing boxes; :class:`BoxNotFound` when there is none."""
        return read_image(self._conn, int(image_id))

    def box_image_id(self, box_id: int) -> int:
        """The image a box (standing or deleted) was drawn on; :class:`BoxNotFound` when there is no such box."""
        return read_box(self._conn, int(box_id))["image_id"]

    def box_images(self, done: bool | None = None, limit: int | None = None,
                   exclude: Collection[int] = ()) -> list[BoxImage]:
        """Images by id with their standing boxes: all, the done ones or the waiting ones, less ``exclude``."""
        return read_images(self._conn, done, limit, list(exclude))

    def box_progress(self) -> BoxProgress:
        return read_box_progress(self._conn)

    def drawn_boxes(self) -> int:
        """Boxes people drew that stand (neither deleted nor undone); 0 for a project that was given its boxes."""
        return count_standing(self._conn) if read_meta(self._conn) is not None else 0

    def freeze_boxes(self, only_done: bool = False, now: float | None = None) -> BoxPool:
        """Make the drawn boxes the pool, once (:func:`apis.store.box_pool.freeze`); from then on they never change."""
        with self._transaction() as conn:
            return freeze(conn, only_done, time.time() if now is None else now)

    def box_pool(self) -> BoxPool | None:
        """The frozen pool, or None while the boxes can still change."""
        return frozen(self._conn)

    def boxes_finished(self) -> dict | None:
        """The record of a finished pool (its json written, P0 posted), or None."""
        return self.phase(FINISHED_PHASE)


__all__ = [
    "ANSWERS",
    "DB_NAME",
    "DECISIONS",
    "SCHEMA_VERSION",
    "AnswerResult",
    "BatchRefused",
    "BoxConflict",
    "BoxImage",
    "BoxNotFound",
    "BoxPool",
    "BoxProgress",
    "BoxRefused",
    "BoxRequest",
    "BoxResult",
    "DrawnBox",
    "NothingToUndo",
    "PointAnswer",
    "QueryClosed",
    "QueryNotFound",
    "QueueProgress",
    "ReviewDecision",
    "StepConsumed",
    "Store",
    "StoreError",
    "StoredInstance",
    "StoredPoint",
    "StoredQuery",
    "UndoRefused",
    "UndoResult",
]
