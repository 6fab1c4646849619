"""Who answers the loop's questions: the oracle at once, or people through the store's queue.

The active loop (:mod:`apis.loop`) asks two kinds of question and does not care who answers them:

* **P0** (phase ``p0``): ``loop.initial_points`` pixels drawn uniformly in each pool object's Ω
  (:func:`apis.oracle.initial_points`); none with 0, the box-only start.
* **a step's answers** (phase ``answer_s``): one pixel per chosen object, the strategy's best, and for an object
  whose mask a reviewer rejected the review's extra points (its next best pixels, ``loop.review_points``), all in
  the choices :func:`apis.selection.select.select_points` made. Each is a :class:`~apis.selection.select.Choice`:
  an integer pixel (x = column, y = row) of the original image, answered 1 if it lies on the object.

:class:`OracleAnswerer` answers both from :class:`apis.oracle.Oracle` at once and stores the answers with their
phase mark in one transaction. :class:`PeopleAnswerer` posts them as questions (:mod:`apis.queue`), and raises
:class:`WaitingForPeople` until none is open; a person who "can't tell" is asked the next of the question's
``reserve`` pixels instead, so the selection ranks that many beside each choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from apis import queue
from apis.data.records import CocoDataset
from apis.layout import answer_phase
from apis.names import NEEDS_GT
from apis.oracle import Oracle, Query, ask, initial_answers, initial_points
from apis.selection.select import Choice
from apis.store import BoxProgress, Store

Report = Callable[[str], None]
ProgressFor = Callable[[str], Callable[..., None] | None]
"""A label → the progress callback ``(done, total)`` of the work it names, or None (no progress shown)."""
Describe = Callable[[Sequence[Choice], Sequence[int]], dict]
"""The chosen pixels and their answers (1 on the object) → the diagnostics an ``answer_s`` phase records."""


def no_progress(label: str) -> None:
    return None


class WaitingForPeople(Exception):
    """The step's questions are posted and some are still open; run again once people have answered."""

    def __init__(self, step: int, open_questions: int):
        super().__init__(f"step {step}: {open_questions} questions are waiting for people; answer them with "
                         f"`apis serve PROJECT` (or `apis queue export/import`), then run again to continue")
        self.step = step
        self.open_questions = open_questions


class WaitingForBoxes(WaitingForPeople):
    """A project started from images alone (``apis init --images``) whose boxes people are still drawing."""

    def __init__(self, progress: BoxProgress) -> None:
        Exception.__init__(self, f"{progress.images - progress.done} of {progress.images} images still wait for "
                                 "their boxes; draw them on the box page (`apis serve PROJECT`), which posts P0 when "
                                 "the last is done, or `apis boxes finish PROJECT [--only-done]`; then run again")
        self.step = 0
        self.open_questions = 0


class Answerer(Protocol):
    """Who answers: the loop calls :meth:`initial_points` once for P0 and :meth:`answer` once a step, each only
    while its phase is not recorded, and each records its phase (``p0``, ``answer_{step}``) with the answers in
    one transaction, or raises :class:`WaitingForPeople` and records nothing until the answers are all in."""

    people: bool  # questions go to people (the run's ``arm`` phase records it)
    reserve: int  # next-best pixels the selection keeps beside each chosen one, asked after a "can't tell"

    def initial_points(self, store: Store, dataset: CocoDataset, seed: int, k: int) -> None:
        """P0: ``k`` uniform random pixels in each pool object's Ω of ``dataset`` (seeded by ``seed``), answered;
        ``k`` = 0 records an empty P0."""

    def answer(self, store: Store, step: int, choices: list[Choice], describe: Describe) -> None:
        """The answers to ``choices`` (the review's extra points among them) as points of ``step``; ``describe``
        gives the diagnostics the phase records beside how many were answered."""


def record_no_initial_points(store: Store, seed: int, report: Report) -> None:
    """The box-only start (``loop.initial_points`` 0): P0 recorded, and empty."""
    store.add_points([], phase="p0", phase_payload={"points": 0, "seed": seed})
    report("P0: none (M0 learns from boxes alone)")


@dataclass(frozen=True)
class OracleAnswerer:
    """Answers at once from ``oracle`` (simulation: :class:`apis.oracle.MaskOracle`), stored as chosen by
    ``strategy`` (P0 as random)."""

    oracle: Oracle
    strategy: str
    report: Report = print
    progress: ProgressFor = no_progress
    people: ClassVar[bool] = False
    reserve: ClassVar[int] = 0

    def initial_points(self, store: Store, dataset: CocoDataset, seed: int, k: int) -> None:
        if k <= 0:
            record_no_initial_points(store, seed, self.report)
            return
        answers = initial_answers(dataset, self.oracle, seed, k=k)
        store.add_points(answers, phase="p0", phase_payload={"points": len(answers), "seed": seed})
        self.report(f"P0: {len(answers)} points answered")

    def answer(self, store: Store, step: int, choices: list[Choice], describe: Describe) -> None:
        queries = [Query(c.instance_id, c.image_id, c.x, c.y) for c in choices]
        progress = self.progress(f"answer P{step}") or (lambda *_: None)
        progress(0, len(queries))
        answers = ask(self.oracle, queries, step, self.strategy)
        progress(0, len(queries))  # answered, not yet stored: the moment a crash must not lose them
        diag = describe(choices, [a.label for a in answers])
        store.add_points(answers, phase=answer_phase(step), phase_payload={"answered": len(answers), **diag})
        progress(len(queries), len(queries))
        self.report(f"step {step}: {len(answers)} points answered ({self.strategy})")


@dataclass(frozen=True)
class PeopleAnswerer:
    """Posts the questions to the store's queue (once) and takes the answers when none is open; until then it
    stops the run with :class:`WaitingForPeople`, so a run started again resumes at the same phase."""

    strategy: str
    report: Report = print
    people: ClassVar[bool] = True
    reserve: ClassVar[int] = queue.ALTERNATES

    def __post_init__(self) -> None:
        if self.strategy in NEEDS_GT:
            raise ValueError(f"strategy {self.strategy!r} reads GT masks; people cannot be asked its points")

    def initial_points(self, store: Store, dataset: CocoDataset, seed: int, k: int) -> None:
        """One uniform random pixel per object (the simulation's P0 pixel for the same seed, so human and simulated
        runs pair up), with further random pixels in reserve for "can't tell"."""
        if k > 1:
            raise ValueError(f"loop.initial_points {k}: people are asked one P0 point per instance (or none, "
                             f"with 0); set 1 or 0")
        if k <= 0:
            record_no_initial_points(store, seed, self.report)
            return
        first = initial_points(dataset, seed)
        spare: dict[int, list[tuple[int, int]]] = {}
        for q in initial_points(dataset, seed + 1, k=self.reserve + 1):
            spare.setdefault(q.instance_id, []).append((q.x, q.y))
        alternates = {q.instance_id: [p for p in spare.get(q.instance_id, []) if p != (q.x, q.y)][: self.reserve]
                      for q in first}
        posted = queue.post(store, 0, first, alternates, strategy="random")
        if posted:
            self.report(f"P0: {posted} questions posted for people")
        answers = self._collect(store, 0)
        queue.consume(store, 0, phase="p0", payload={"points": len(answers), "seed": seed})

    def answer(self, store: Store, step: int, choices: list[Choice], describe: Describe) -> None:
        posted = queue.post(store, step, choices, {c.instance_id: c.alternates for c in choices},
                            strategy=self.strategy)
        if posted:
            self.report(f"step {step}: {posted} questions posted for people")
        answers = self._collect(store, step)
        # A "can't tell" moves the question to another pixel: judge each answer against its own pixel.
        by_pixel = {(a.instance_id, a.x, a.y): a.label for a in answers}
        asked = [c for c in choices if (c.instance_id, c.x, c.y) in by_pixel]
        diag = describe(asked, [by_pixel[(c.instance_id, c.x, c.y)] for c in asked])
        queue.consume(store, step, phase=answer_phase(step), payload={"answered": len(answers), **diag})
        self.report(f"step {step}: {len(answers)} answers from people taken")

    @staticmethod
    def _collect(store: Store, step: int) -> list:
        answers = queue.collect(store, step)
        if answers is None:
            raise WaitingForPeople(step, queue.open_count(store, step))
        return answers
