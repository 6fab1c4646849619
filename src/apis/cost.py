"""Annotation cost: what the answers, masks and boxes of a run cost in seconds of a person's time.

Defaults follow the paper: a yes/no point answer 0.9 s, a polygon mask 79.2 s, a box 7 s (extreme
clicking). A review decision (accept, reject or skip an exported mask) costs 3 s: an assumption of ours,
not a measurement (a glance at one mask over its image region, about three point answers' time); set
``cost.review_seconds`` to what your reviewers take. Boxes people draw on apis's box page (a project started
from images alone, ``apis init --images``) are priced at ``box_s``: the paper's extreme-clicking figure, an
assumption for a drag on our page, not a measurement of it. Budgets are reported in counts and in these units.
Conversions between points and masks use exact decimal arithmetic so that, e.g., 88 points buy exactly
one mask rather than 0.9999… of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apis.store import Store


@dataclass
class CostModel:
    """Seconds a person spends per point answer, per polygon mask, per box and per review decision."""

    point_s: float = 0.9  # a yes/no answer about one pixel (the paper's)
    mask_s: float = 79.2  # a polygon mask (the paper's, from COCO's annotation time)
    box_s: float = 7.0  # a box by extreme clicking
    review_seconds: float = 3.0  # an assumption (module doc); 0 leaves review time out

    def __post_init__(self) -> None:
        for name in ("point_s", "mask_s", "box_s"):
            if not getattr(self, name) > 0:
                value = getattr(self, name)
                raise ValueError(f"CostModel.{name} must be a positive number of seconds, got {value}")
        if not self.review_seconds >= 0:
            raise ValueError(f"CostModel.review_seconds must be a number of seconds ≥ 0, got {self.review_seconds}")


@dataclass(frozen=True)
class Counts:
    """How many point answers, polygon masks, boxes and review decisions were (or would be) made."""

    points: int = 0
    masks: int = 0
    boxes: int = 0
    reviews: int = 0


@dataclass
class BudgetSummary:
    """Counts and their total cost in seconds and hours under one :class:`CostModel`."""

    points: int
    masks: int
    boxes: int
    seconds: float
    hours: float
    reviews: int = 0


def budget(
    store_or_counts: Store | Counts | Mapping[str, int],
    cost: CostModel | None = None,
    *,
    split: str | None = None,
    max_step: int | None = None,
) -> BudgetSummary:
    """The cost of a store's answers (or of explicit counts) under ``cost`` (default :class:`CostModel`).

    For a store: ``points`` are the stored answers up to ``max_step``; ``boxes`` are the stored instances
    of ``split`` (all splits when None — pass the training split to price the labelling effort); ``masks``
    are 0 because the store holds no masks; ``reviews`` are the review decisions made about the exports of
    steps ≤ ``max_step`` (:func:`review_decisions`). A mapping may give any of ``points``, ``masks``,
    ``boxes``, ``reviews``.
    """
    cost = cost or CostModel()
    counts = _counts(store_or_counts, split, max_step)
    exact = (
        counts.points * _exact(cost.point_s)
        + counts.masks * _exact(cost.mask_s)
        + counts.boxes * _exact(cost.box_s)
        + counts.reviews * _exact(cost.review_seconds)
    )
    seconds = float(exact)
    return BudgetSummary(counts.points, counts.masks, counts.boxes, seconds, seconds / 3600.0, counts.reviews)


def review_decisions(store: Store, max_step: int | None = None) -> int:
    """Review decisions a person (or the simulated reviewer) made about the exports of steps ≤ ``max_step``:
    accepts, rejects and skips alike, since a skip took a look too. An undone decision is left out: undo is
    for a slip of the key, and the decision made instead is counted."""
    return sum(1 for d in store.review_log(masks=False)
               if d.undone_at is None and (max_step is None or d.step <= max_step))


def drawn_boxes(store: Store) -> int:
    """Boxes people drew on the box page that stand (neither deleted nor undone; a drag that a person then moved
    or resized is one box): each costs ``box_s`` in the annotation hours. 0 for a project whose json came with its
    boxes: those were drawn outside apis, and cost every strategy the same."""
    return store.drawn_boxes()


def masks_for_points_budget(points: int, cost: CostModel | None = None) -> int:
    """How many whole masks the time of ``points`` point answers buys: floor(points · point_s / mask_s).

    AFIS spends each step's point budget on masks instead: with one point per instance per step and Q
    instances, that is ``masks_for_points_budget(Q)`` masks per step (Q · 0.9 / 79.2 = Q / 88).
    """
    cost = cost or CostModel()
    return int(_nonneg(points, "points") * _exact(cost.point_s) // _exact(cost.mask_s))


def points_for_masks_budget(masks: int, cost: CostModel | None = None) -> int:
    """How many point answers the time of ``masks`` polygon masks buys: floor(masks · mask_s / point_s)."""
    cost = cost or CostModel()
    return int(_nonneg(masks, "masks") * _exact(cost.mask_s) // _exact(cost.point_s))


def afis_masks_per_step(
    num_instances: int, points_per_instance: int = 1, cost: CostModel | None = None
) -> int:
    """Masks an active fully-supervised step buys for the budget of ``points_per_instance`` points on each
    of ``num_instances`` instances (the paper's AFIS comparison)."""
    return masks_for_points_budget(_nonneg(num_instances, "num_instances") * points_per_instance, cost)


def _counts(source: Store | Counts | Mapping[str, int], split: str | None, max_step: int | None) -> Counts:
    if isinstance(source, Counts):
        return source
    if isinstance(source, Mapping):
        unknown = set(source) - {"points", "masks", "boxes", "reviews"}
        if unknown:
            raise ValueError(f"unknown count keys {sorted(unknown)}; use points, masks, boxes and reviews")
        return Counts(**{k: _nonneg(v, k) for k, v in source.items()})
    return Counts(points=source.point_count(max_step), masks=0, boxes=len(source.instances(split)),
                  reviews=review_decisions(source, max_step))


def _exact(seconds: float) -> Fraction:
    # str() gives the shortest decimal that round-trips, so 0.9 becomes exactly 9/10, not 0.90000000000000002.
    return Fraction(str(seconds))


def _nonneg(value: int, name: str) -> int:
    if value < 0:
        raise ValueError(f"{name} must be a non-negative count, got {value}")
    return int(value)
