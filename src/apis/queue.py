"""People answer the active loop's questions through a queue in the store.

A step that asks people, instead of a :class:`apis.oracle.MaskOracle`, goes in three moves:

1. :func:`post` puts the step's chosen pixels into the store as open questions, each with its next-best
   pixels (asked instead when a person answers "can't tell"). Posting a step twice posts nothing new.
2. People answer in the browser (``apis serve``) or in a file (``apis queue export`` / ``import``); every
   answer is a point in the store the moment it is given.
3. :func:`collect` returns the step's answers once no question is open (None until then), and
   :func:`consume` records that the loop has taken them, with the loop's phase mark, in one transaction;
   from then on none of them can be undone.

Pixels are integer ``(x, y)`` = (column, row) of the original image, as everywhere in apis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from apis.store import PointAnswer, Store

ALTERNATES = 5
"""Next-best pixels worth ranking per question: a person may answer "can't tell" this many times per object."""


def post(
    store: Store,
    step: int,
    choices: Sequence[Any],
    alternates: Mapping[int, Sequence[tuple[int, int]]] | None = None,
    *,
    strategy: str,
) -> int:
    """Post ``choices`` (selection ``Choice`` or oracle ``Query`` objects) as the open questions of ``step``.

    ``alternates`` maps an instance id to its pixels ranked best first, e.g.
    ``ranked_points(cand, strategy, rng, ALTERNATES + 1)`` (a ranking that starts with the chosen pixel may be
    passed whole). ``strategy`` names how the pixels were chosen; it is stored with every answer. Returns how
    many questions were posted: 0 when this step was posted before with the same questions.
    """
    return store.post_queries(step, choices, strategy, alternates)


def open_count(store: Store, step: int) -> int:
    """Questions of ``step`` still waiting for a person."""
    return len(store.open_queries(step))


def collect(store: Store, step: int) -> list[PointAnswer] | None:
    """The answers of ``step`` (skipped questions have none) once none is open; None while some are."""
    if not store.step_complete(step):
        return None
    return store.answers_for_step(step)


def consume(store: Store, step: int, phase: str | None = None, payload: dict | None = None) -> None:
    """Mark ``step``'s answers as taken by the loop (and ``phase`` complete) in one transaction; idempotent."""
    store.consume_step(step, phase, payload)


__all__ = ["ALTERNATES", "collect", "consume", "open_count", "post"]
