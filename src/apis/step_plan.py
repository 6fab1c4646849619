"""Which objects a step's selection asks about, and how many points each.

Two things shape ``select_s`` beside the strategy (:mod:`apis.loop`):

* the review decisions about the exports of steps < s (:func:`review_plan`): an object whose standing decision
  is an accept is asked nothing more; one whose standing decision is a reject, not yet acted on, gets
  ``loop.review_points`` extra pixels beside its usual one;
* a fixed point budget, ``loop.points_per_step`` > 0 (the paper's appendix C, :func:`limit_choices`): the objects
  that get a point are drawn at random (seeded), or are those M(s−1) detects best (``instance_choice:
  detection_loss``); the rejected objects' points are kept beside the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import torch

from apis.data.records import CocoDataset
from apis.layout import select_phase
from apis.models.condinst import CondInst
from apis.models.ensemble import Ensemble
from apis.selection.instances import instance_scores
from apis.selection.select import Choice
from apis.store import Store

DetectionLosses = Callable[[set[int]], Mapping[int, float]]
"""Instance ids → each one's detection loss under M(s−1) (lower: detected better)."""


def review_plan(store: Store, step: int) -> tuple[set[int], dict[int, int]]:
    """What the review decisions about the exports of steps < ``step`` ask of ``select_{step}``: the
    instances whose standing decision is an accept (asked nothing more), and instance → decision id of
    each standing reject that no earlier selection has acted on (asked ``loop.review_points`` more)."""
    standing = store.reviews(max_step=step - 1)
    accepted = {i for i, d in standing.items() if d.decision == "accept"}
    rejects = {i: d for i, d in standing.items() if d.decision == "reject"}
    # A reject about M(r)'s export can only have been used by selections r+1 … step−1; usually (reviewed
    # before selection r+1 = step) there is none to read, which spares parsing large selection payloads.
    first = min((d.step + 1 for d in rejects.values()), default=step)
    used = {u for t in range(first, step)
            for u in ((store.phase(select_phase(t)) or {}).get("review") or {}).get("rejects_used", [])}
    return accepted, {i: d.id for i, d in rejects.items() if d.id not in used}


def detection_losses(model: CondInst | Ensemble, dataset: CocoDataset, device: torch.device | str,
                     batch_size: int, progress: Callable[[int, int], None] | None = None) -> DetectionLosses:
    """The detection losses of ``model`` (an ensemble's first member) over the objects of ``dataset`` asked for,
    scored in one pass (:func:`apis.selection.instances.instance_scores`) when they are asked for."""

    def losses(ids: set[int]) -> dict[int, float]:
        scorer = model.members[0] if isinstance(model, Ensemble) else model
        scores = instance_scores(scorer, dataset, device, batch_size=batch_size, instance_ids=ids, progress=progress)
        return {i: scores[i].detection_loss for i in ids}

    return losses


def limit_choices(choices: Sequence[Choice], points_per_step: int, instance_choice: str, seed: int, step: int,
                  keep: Collection[int] = frozenset(), losses: DetectionLosses | None = None) -> list[Choice]:
    """Keep ``points_per_step`` of ``choices`` when a fixed budget is set (> 0): those of the objects drawn at
    random (a generator seeded by ``seed`` and ``step``), or with ``instance_choice`` ``detection_loss`` those
    ``losses`` ranks lowest (ties by instance id). The choices of the objects in ``keep`` (rejected by a reviewer:
    the review asked for their points) are kept beside the budget, which the other objects share. Pool order is
    kept."""
    n = points_per_step
    rest = [i for i, c in enumerate(choices) if c.instance_id not in keep]
    if n <= 0 or n >= len(rest):
        return list(choices)
    if instance_choice == "detection_loss":
        if losses is None:
            raise ValueError("instance_choice 'detection_loss' ranks the objects by M(s−1)'s detection loss: pass "
                             "losses (detection_losses of the model)")
        loss = losses({choices[i].instance_id for i in rest})
        picked = set(sorted(rest, key=lambda i: (loss[choices[i].instance_id], choices[i].instance_id))[:n])
    else:
        g = torch.Generator().manual_seed(seed * 7919 + step)
        picked = {rest[j] for j in torch.randperm(len(rest), generator=g)[:n].tolist()}
    return [c for i, c in enumerate(choices) if i in picked or c.instance_id in keep]
