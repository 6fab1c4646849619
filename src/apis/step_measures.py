"""What each step of the active loop measures: the ``eval_s`` phase's metrics and the row a step adds.

* COCO mask and box AP of M(step) on the validation split (:func:`val_metrics`), in percent;
* in simulation (GT masks answer and every pool object has one), over the pool objects or a fixed sample of
  ``loop.yardstick_objects`` of them: the pool IoU of the masks apis would export, how well their trust scores
  sort them (Spearman, worst tenth caught), and the no-model yardsticks (:mod:`apis.yardsticks`);
* per answered step, what M(s−1) believed at the chosen pixels (:meth:`StepMeasures.describe`: the share it
  misclassified, their mean distance in pixels to the GT boundary);
* the :class:`StepResult` of each step: all of the above with the points per object and the annotation hours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from apis.answerers import ProgressFor, no_progress
from apis.config import RunConfig
from apis.cost import CostModel, drawn_boxes, review_decisions
from apis.data.loader import PseudoMask
from apis.data.records import CocoDataset
from apis.evaluate import evaluate
from apis.export import export_masks, pool_mask_ious, trust_rank_correlation, worst_caught
from apis.layout import answer_phase
from apis.mask_policy import ColourEvidence
from apis.models.condinst import CondInst
from apis.models.ensemble import Ensemble
from apis.pseudo_masks import cached_grabcut_pseudo_masks
from apis.selection.select import Choice, boundary_distance
from apis.store import Store
from apis.yardsticks import PoolSample, pool_ious, pool_sample


def val_metrics(model: CondInst, val_set: CocoDataset, device: torch.device, step_dir: Path, batch_size: int,
                progress: Callable[[int, int], None] | None) -> dict:
    """COCO metrics of ``model`` on the validation split as an ``eval_s`` phase records them (segm, bbox,
    seconds); the COCO result json goes to ``step_dir/val_results.json``."""
    ev = evaluate(model, val_set, device, step_dir / "val_results.json", batch_size=batch_size, progress=progress)
    return {"segm": ev.segm, "bbox": ev.bbox, "seconds": ev.seconds}


def metrics_line(step: int, metrics: dict) -> str:
    return f"step {step}: mask AP {metrics['segm']['AP']:.2f}  box AP {metrics['bbox']['AP']:.2f}"


@dataclass
class StepResult:
    """What one step produced. Metrics in percent; diagnostics over the points chosen at this step
    (None at step 0 or when the model predicted nothing there)."""

    step: int
    points_per_instance: float
    annotation_hours: float
    segm: dict
    bbox: dict
    misclassified: float | None = None
    boundary_distance: float | None = None
    chosen: int = 0
    pool_iou: float | None = None
    # The no-model yardsticks on the same pool (simulation only): method → {"mean", "se", "n"}, see
    # apis.yardsticks; grabcut_points uses the answers of steps ≤ step.
    yardsticks: dict | None = None
    # Review decisions about the exports of steps < step (accepts, rejects and skips; they shaped this step's
    # points and masks), their hours (included in annotation_hours), and the objects accepted among them.
    reviews: int = 0
    review_hours: float = 0.0
    accepted: int = 0
    # Spearman's rank correlation of apis_score with the true IoU over the pool masks the model made, and the
    # share of the worst tenth by true IoU that the least trusted tenth holds (simulation only;
    # apis.export.trust_rank_correlation, apis.export.worst_caught).
    trust_spearman: float | None = None
    trust_worst_tenth: float | None = None


def point_diagnostics(choices: Sequence[Choice], labels: Sequence[int],
                      gt_masks: Callable[[int], object] | None) -> dict:
    """Over the chosen pixels and their answers (1: on the object): ``misclassified``, the share of those M(s−1)
    predicted (``p_mean`` not None) whose thresholded mean (> 0.5) disagrees with the answer, and, with
    ``gt_masks`` (instance id → H×W GT mask), ``boundary_distance``, the mean distance in pixels from a chosen
    pixel to the GT boundary (infinite ones left out); None where there is nothing to average."""
    judged = [(c.p_mean > 0.5) != bool(y) for c, y in zip(choices, labels, strict=True) if c.p_mean is not None]
    out: dict = {"misclassified": sum(judged) / len(judged) if judged else None}
    if gt_masks is not None and choices:
        d = [boundary_distance(gt_masks(c.instance_id), c.x, c.y) for c in choices]
        finite = [v for v in d if math.isfinite(v)]
        out["boundary_distance"] = sum(finite) / len(finite) if finite else None
    return out


@dataclass
class StepMeasures:
    """The measures of one run over the pool ``dataset``, on ``val_set``. ``gt_masks`` (instance id → H×W GT
    mask; None outside simulation) gives the pool IoU, the yardsticks and the boundary distances; GrabCut's
    masks are cached in ``cache_dir``; ``colour_evidence`` is what an export of M(step) knows of the colours."""

    cfg: RunConfig
    dataset: CocoDataset
    val_set: CocoDataset
    cache_dir: Path
    colour_evidence: ColourEvidence
    gt_masks: Callable[[int], object] | None = None
    device: torch.device | str = "cpu"
    progress: ProgressFor = no_progress

    def measure(self, store: Store, step: int, model: CondInst, step_dir: Path,
                selection_model: Callable[[], CondInst | Ensemble]) -> dict:
        """The ``eval_{step}`` payload of M(step) (``model``; ``selection_model()``: it, or its ensemble, as
        the export sees it): :func:`val_metrics`, :meth:`pool_iou` and, where measured, ``yardsticks``."""
        done = val_metrics(model, self.val_set, self.device, step_dir, self.cfg.eval_batch_size,
                           self.progress(f"evaluate M{step}"))
        done.update(self.pool_iou(selection_model(), store, step))
        if (ys := self.yardsticks(store, step)) is not None:
            done["yardsticks"] = ys
        return done

    def describe(self, choices: Sequence[Choice], labels: Sequence[int]) -> dict:
        """The diagnostics an ``answer_s`` phase records (:func:`point_diagnostics`)."""
        return point_diagnostics(choices, labels, self.gt_masks)

    @property
    def simulated(self) -> bool:
        """GT masks answer the questions and every pool instance has one, so mask IoUs can be measured."""
        return self.gt_masks is not None and all(a.segmentation is not None for a in self.dataset.instances())

    def pool_sample(self) -> PoolSample:
        return pool_sample([a.id for a in self.dataset.instances()], self.cfg.loop.yardstick_objects)

    def pool_iou(self, model: CondInst | Ensemble, store: Store, step: int) -> dict[str, float | None]:
        """Mean IoU of the masks apis would export for the pool against GT (simulation only), over the
        same objects as the yardsticks: the whole pool up to ``loop.yardstick_objects``, else that fixed
        sample (a refined export costs GrabCut's time per object); and, over the same objects, how well their
        trust scores sort them (Spearman's correlation with those IoUs, and the share of the worst tenth the least
        trusted tenth holds). Keys ``pool_iou``, ``trust_spearman``, ``trust_worst_tenth``; None outside
        simulation."""
        if not self.simulated:
            return {"pool_iou": None, "trust_spearman": None, "trust_worst_tenth": None}
        loop = self.cfg.loop
        ids = self.pool_sample().instance_ids if loop.yardstick_objects > 0 else None
        trust, fit = self.colour_evidence(store, step)
        box_cuts = None
        if ids is not None and fit is not None:
            # The yardstick "GrabCut + points" is the refinement's start from the box: cut once, for both.
            box_cuts = {i: m.mask for i, m in self.grabcut_with_answers(store, step, ids).items()}
        exported = export_masks(model, self.dataset, store, self.device, loop.prediction_set, max_step=step,
                                batch_size=self.cfg.eval_batch_size, refine=loop.refine_masks, trust_colours=trust,
                                instance_ids=ids, box_cuts=box_cuts, cut_fit=fit,
                                progress=self.progress(f"export P{step}"))
        ious = pool_mask_ious(exported, self.dataset, ids)
        rho, caught = trust_rank_correlation(exported, ious), worst_caught(exported, ious)
        return {"pool_iou": round(float(np.mean(list(ious.values()))), 5),
                "trust_spearman": None if rho is None else round(rho, 5),
                "trust_worst_tenth": None if caught is None else round(caught, 5)}

    def yardsticks(self, store: Store, step: int) -> dict | None:
        """The no-model yardsticks of this step's pool (simulation only; see :mod:`apis.yardsticks`):
        method → {"mean", "se", "n"} over a fixed sample of ``loop.yardstick_objects`` objects."""
        if self.cfg.loop.yardstick_objects <= 0 or not self.simulated:
            return None
        sample = self.pool_sample()
        ids = sample.instance_ids
        grabcut = cached_grabcut_pseudo_masks(self.cache_dir, self.dataset, None, ids,
                                              self.progress("GrabCut yardstick"))
        with_points = self.grabcut_with_answers(store, step, ids)
        return {m: {"mean": round(e.mean, 5), "se": round(e.se, 5), "n": e.n}
                for m, e in pool_ious(self.dataset, sample, grabcut, with_points).items()}

    def grabcut_with_answers(self, store: Store, step: int, ids: Sequence[int]) -> dict[int, PseudoMask]:
        """GrabCut from the box seeded with the answers of steps ≤ ``step``, for the instances ``ids``
        (cached: the yardstick and the export's refinement share it)."""
        answered = {i: [(p.x, p.y, p.label) for p in ps] for i, ps in store.points(max_step=step).items()}
        return cached_grabcut_pseudo_masks(self.cache_dir, self.dataset, answered, ids,
                                           self.progress(f"GrabCut yardstick P{step}"))

    def step_result(self, store: Store, step: int, metrics: dict) -> StepResult:
        """Row ``step`` of the run. Its hours are those spent to reach M(step) and its export: the boxes people
        drew on the box page (none when the json came with its boxes), the answers of steps ≤ step and the review
        decisions about the exports of steps < step (a review of M(step)'s own export pays off at the next step,
        and is counted there)."""
        n_inst = len(store.instances("train"))
        n_points = store.point_count(max_step=step)
        cost: CostModel = self.cfg.cost
        diag = store.phase(answer_phase(step)) or {}
        reviews = review_decisions(store, max_step=step - 1) if step > 0 else 0
        accepted = sum(d.decision == "accept" for d in store.reviews(max_step=step - 1).values()) if step > 0 else 0
        review_s = reviews * cost.review_seconds
        box_s = drawn_boxes(store) * cost.box_s  # a pool people boxed on the box page: every step stands on it
        return StepResult(
            step=step,
            points_per_instance=round(n_points / max(1, n_inst), 3),
            annotation_hours=round((n_points * cost.point_s + review_s + box_s) / 3600, 4),
            segm=metrics["segm"],
            bbox=metrics["bbox"],
            misclassified=diag.get("misclassified"),
            boundary_distance=diag.get("boundary_distance"),
            chosen=int(diag.get("answered", 0)),
            pool_iou=metrics.get("pool_iou"),
            yardsticks=metrics.get("yardsticks"),
            reviews=reviews,
            review_hours=round(review_s / 3600, 4),
            accepted=accepted,
            trust_spearman=metrics.get("trust_spearman"),
            trust_worst_tenth=metrics.get("trust_worst_tenth"),
        )
