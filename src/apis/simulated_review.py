"""The simulated reviewer of the active loop (``loop.review.per_step`` > 0, simulation only).

Before selection s + 1 it judges the ``per_step`` least trusted masks of M(s)'s pool export (lowest
``apis_score``, accepted objects left out) against their GT masks (:class:`apis.oracle.MaskReviewer`: accepted at
IoU ≥ ``loop.review.accept_iou``) and stores each decision as reviewer ``"simulated"`` the moment it is made, so a
resumed phase judges only the objects it has not judged yet. People review the same exports on the review page
(``apis serve --review-step S``) instead; the loop reads both kinds of decision alike
(:meth:`apis.store.Store.reviews`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from apis.answerers import ProgressFor, no_progress
from apis.config import RunConfig
from apis.data.records import CocoDataset, encode_mask
from apis.export import ExportResult, InstanceExport, export_masks
from apis.mask_policy import ColourEvidence
from apis.models.condinst import CondInst
from apis.models.ensemble import Ensemble
from apis.oracle import SIMULATED_REVIEWER, MaskReviewer
from apis.store import Store


def refuse_review(per_step: int, people: bool, gt_masks: Callable[[int], object] | None) -> None:
    """ValueError naming the fix where the simulated reviewer has no GT masks to judge with."""
    if per_step > 0 and (people or gt_masks is None):
        raise ValueError(f"loop.review.per_step {per_step}: the simulated reviewer judges masks with the GT masks, so "
                         "it runs in simulation only; people review with `apis serve --review-step S` or `apis queue "
                         "export --review-step S`; set per_step 0")


def standing_decisions(store: Store, step: int) -> list:
    """The simulated reviewer's standing decisions about M(step)'s export, oldest first."""
    return [d for d in store.review_log(step) if d.reviewer == SIMULATED_REVIEWER and d.undone_at is None]


def review_line(step: int, payload: dict) -> str:
    return (f"step {step}: {payload['reviewed']} masks reviewed (simulated): {payload['accepted']} accepted, "
            f"{payload['rejected']} rejected")


@dataclass
class SimulatedReview:
    """Judges ``cfg.loop.review.per_step`` masks of each export of the pool ``dataset`` with ``gt_masks``
    (instance id → H×W GT mask); ``colour_evidence`` is what the run's refined export knows of the colours."""

    cfg: RunConfig
    dataset: CocoDataset
    gt_masks: Callable[[int], object]
    colour_evidence: ColourEvidence
    device: torch.device | str = "cpu"
    progress: ProgressFor = no_progress

    def review(self, store: Store, step: int, model: CondInst | Ensemble) -> dict:
        """Judge the least trusted masks of M(step)'s export (``model``, or its ensemble) not judged yet, store
        each decision, and return the ``review_{step}`` payload over all of this step's simulated decisions:
        reviewed, accepted, rejected, and their masks' mean IoU with GT."""
        ranked = self._export(store, step, model, "none")
        judged = {d.instance_id for d in standing_decisions(store, step)}  # before a crash, if any
        pick = sorted((e for e in ranked.instances if not e.reviewed and e.annotation_id not in judged),
                      key=lambda e: (e.score, e.annotation_id))[: max(0, self.cfg.loop.review.per_step - len(judged))]
        shown = ranked
        if pick and self.cfg.loop.refine_masks != "none":
            shown = self._export(store, step, model, self.cfg.loop.refine_masks, {e.annotation_id for e in pick})
        reviewer = MaskReviewer(self.gt_masks, self.cfg.loop.review.accept_iou)
        self._judge(store, step, pick, shown, reviewer)
        made = standing_decisions(store, step)
        ious = [reviewer.judge(d.instance_id, d.mask)[1] for d in made]
        return {"reviewer": SIMULATED_REVIEWER, "reviewed": len(made),
                "accepted": sum(d.decision == "accept" for d in made),
                "rejected": sum(d.decision == "reject" for d in made),
                "mean_iou": round(float(np.mean(ious)), 5) if ious else None}

    def _export(self, store: Store, step: int, model: CondInst | Ensemble, refine: str,
                instance_ids: set[int] | None = None) -> ExportResult:
        # The whole pool is ranked by the trust of its export without GrabCut (the map's and the ellipse's votes; no
        # cut to vote), and only the masks to judge are exported with the run's refinement: one prediction pass and
        # per_step cuts instead of a cut of every object.
        kw = dict(max_step=step, batch_size=self.cfg.eval_batch_size, progress=self.progress(f"review M{step}"))
        if refine == "none":
            return export_masks(model, self.dataset, store, self.device, self.cfg.loop.prediction_set, refine="none",
                                **kw)
        trust, fit = self.colour_evidence(store, step)
        return export_masks(model, self.dataset, store, self.device, self.cfg.loop.prediction_set, refine=refine,
                            trust_colours=trust, instance_ids=instance_ids, cut_fit=fit, **kw)

    def _judge(self, store: Store, step: int, pick: list[InstanceExport], shown: ExportResult,
               reviewer: MaskReviewer) -> None:
        anns = {a["id"]: a for a in shown.coco["annotations"]}
        images = self.dataset.image_by_id()
        for e in pick:
            im = images[e.image_id]
            # A missing mask is shown (and judged) as an empty one, as on the review page: rejecting it asks for
            # more points.
            mask = anns[e.annotation_id].get("segmentation") or encode_mask(np.zeros((im.height, im.width), np.uint8))
            decision, _ = reviewer.judge(e.annotation_id, mask)
            store.add_review(e.annotation_id, step, decision, SIMULATED_REVIEWER, mask, apis_score=e.score)
