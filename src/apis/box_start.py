"""The box-only start's colour cue: when M0 learns from BoxInst's colour-pairwise term, and whether it keeps it.

Without P0 (``loop.initial_points: 0``) M0 learns masks from the boxes alone: from ``auto``'s pseudo masks and
BoxInst's projection term. Where GrabCut's masks fill their boxes, ``auto`` learns from them and so from the
image's colours; where they do not (real photos whose neighbours share the object's colours), it learns from a
shape, the ellipse, which knows nothing of them. BoxInst's pairwise term (neighbouring cells of similar colour
take the same label) is then the one colour cue M0 has: on Penn-Fudan's pedestrians, ramped in over M0's first
quarter (``Schedule.pairwise_warmup``), it lifts the box-only M0 from 16.9 (seed 0) to 37.1 mask AP (three seeds).
It is also the cue most easily misled: at full weight at once it spread each mask over its whole box on DSB's small
nuclei, on the built-in set's textured objects and on one Penn-Fudan seed (mask AP 27.1 → 0.0, 7.5 → 1.5,
18.2 → 0.0), and ramped in it still costs DSB 1.8–10.6 AP (README "The box-only start learns colours where GrabCut
cannot").

So the term is never trusted blind. M0 is trained with it, and its masks are judged the way ``auto`` judges the
shapes without answers: by their pixel agreement with GrabCut's masks that pass the box check
(:func:`apis.mask_checks.cross_agreement`), the one opinion on the objects' outlines that does not come from the
box. The term is kept only when the model's masks agree with them better than the shape it learnt from does;
else M0 is trained again without it. Where too few of GrabCut's masks pass to judge anything, the term is not
tried.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apis.data.records import CocoDataset
from apis.export import export_masks, export_pseudo_masks
from apis.geometry import PixelWindow
from apis.mask_checks import MIN_CROSS_CHECKED, SHAPE_SOURCES, check_mask, cross_agreement
from apis.pseudo_masks import Progress, no_model_masks


def box_start_pairwise(weight: float, learnt_from: str | None) -> float:
    """The weight of BoxInst's colour-pairwise loss to try for M0 of a box-only start (``weight``:
    ``loop.box_start_pairwise``): ``weight`` where its pseudo masks do not follow the image's colours
    (``learnt_from`` a shape, the ellipse or the box, as ``auto`` picks where GrabCut's masks fail the box check;
    or None, no pseudo masks), else 0: GrabCut's masks, or a model's refined export, carry the colours already."""
    if weight < 0:
        raise ValueError(f"the pairwise weight must be ≥ 0, got {weight}")
    return weight if learnt_from is None or learnt_from in SHAPE_SOURCES else 0.0


def trial_weight(weight: float, given: float, learnt_from: str | None) -> float | None:
    """The pairwise weight M0 of a box-only start tries (:func:`box_start_pairwise`), or None where there is nothing
    to try: it would not be above ``given``, the config's ``model.pairwise_weight``, which applies anyway."""
    w = box_start_pairwise(weight, learnt_from)
    return w if w > given else None


@dataclass(frozen=True)
class PairwiseJudge:
    """What judges M0's masks: GrabCut's masks of the boxes that pass the box check (``cuts``: instance id →
    (Ω window, h×w bool)) and ``shape``'s agreement with them (``bar``, the share of Ω's pixels where the two
    agree, averaged over the cuts' objects; None under :data:`apis.mask_checks.MIN_CROSS_CHECKED` of them)."""

    shape: str
    cuts: dict[int, tuple[PixelWindow, np.ndarray]]
    bar: float | None
    dataset: CocoDataset

    @property
    def ready(self) -> bool:
        return self.bar is not None


@dataclass(frozen=True)
class PairwiseCheck:
    """The verdict on M0 trained with the pairwise term: its masks' agreement with GrabCut's passing masks
    (``maps``) against the ``shape``'s (``bar``), over ``objects`` objects. Kept in the run's store."""

    shape: str
    maps: float | None
    bar: float | None
    objects: int

    @property
    def kept(self) -> bool:
        return self.maps is not None and self.bar is not None and self.maps > self.bar

    def to_json(self) -> dict:
        return {**asdict(self), "kept": self.kept}

    def line(self, weight: float) -> str:
        verdict = ("kept" if self.kept else "left out: M0 is trained again without it")
        return (f"M0 with BoxInst's colour-pairwise term (loop.box_start_pairwise {weight:g}): its masks agree "
                f"{_share(self.maps)} with GrabCut's {self.objects} masks that pass the box check, the {self.shape} "
                f"it learnt from {_share(self.bar)}; the term is {verdict}")


def _share(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def pairwise_judge(cache_dir: Path | None, dataset: CocoDataset, learnt_from: str | None,
                   progress: Progress | None = None) -> PairwiseJudge:
    """GrabCut's masks of the pool that pass the box check (cached GrabCut: no new cut where ``auto`` cut them)
    and the agreement with them of the shape M0 learns from (the ellipse where it learns from no pseudo mask)."""
    shape = learnt_from if learnt_from in SHAPE_SOURCES else "ellipse"
    masks = no_model_masks(cache_dir, dataset, None, progress, ("grabcut", shape))
    cuts = {i: wm for i, wm in masks["grabcut"].items() if check_mask(wm[1], wm[0]).passes_box}
    return PairwiseJudge(shape, cuts, cross_agreement(masks[shape], cuts).share, dataset)


@torch.no_grad()
def check_pairwise(model, judge: PairwiseJudge, device: torch.device | str = "cpu", batch_size: int = 8
                   ) -> PairwiseCheck:
    """Judge ``model`` (M0 trained with the pairwise term): its thresholded maps of the judge's objects (no answer
    forced: there is none) against GrabCut's masks, beside the shape's agreement (:class:`PairwiseCheck`)."""
    dataset = judge.dataset
    exported = export_masks(model, dataset, {}, device=device, batch_size=batch_size, instance_ids=judge.cuts)
    # An object the model gave no mask counts as empty everywhere: a collapse must not hide in the gaps.
    maps = {i: (win, np.zeros_like(cut)) for i, (win, cut) in judge.cuts.items()}
    maps.update({i: (m.window, m.mask) for i, m in export_pseudo_masks(exported, dataset).items() if i in maps})
    agreement = cross_agreement(maps, judge.cuts)
    return PairwiseCheck(judge.shape, agreement.share, judge.bar, agreement.objects)


def set_aside(out: Path, rejected: Path) -> None:
    """Move a rejected trial's folder out of M0's place (once: a resumed run finds it moved)."""
    if out.exists() and not rejected.exists():
        os.replace(out, rejected)


def train_judged(weight: float, given: float, learnt_from: str | None, judge: Callable[[], PairwiseJudge],
                 out: Path, train_with: Callable[[float], tuple[Any, Any]], verdict: Callable[[], dict | None],
                 keep_verdict: Callable[[dict], None], report: Callable[[str], None],
                 device: torch.device | str = "cpu", batch_size: int = 8,
                 move_aside: Callable[[Path, Path], None] = set_aside) -> tuple[Any, Any]:
    """Train M0 of a box-only start into ``out`` with the pairwise term at ``weight`` (``given``: the config's
    ``model.pairwise_weight``, below it), judge it (:func:`check_pairwise`) and, where it is not kept, move the
    trial to ``out``-pairwise-rejected and train M0 again without the term; where the ``judge`` is not ready, M0
    is trained without it at once. ``train_with(w)`` builds a model with pairwise weight ``w``, trains it into
    ``out`` (resuming from its checkpoints) and returns (model, result); ``verdict()`` reads the verdict kept
    by ``keep_verdict`` (a dict of :meth:`PairwiseCheck.to_json` and the weight), None before it, so a killed
    command resumes where it was. Returns what the last ``train_with`` returned."""
    check = verdict()
    if check is None:
        j = judge()
        masks = f"its pseudo masks are the {learnt_from}" if learnt_from else "it learns from no pseudo mask"
        if not j.ready:
            report(f"boxes only and {masks}, without the image's colours, but only {len(j.cuts)} of GrabCut's masks "
                   f"pass the box check (under {MIN_CROSS_CHECKED}): nothing could judge BoxInst's colour-pairwise "
                   "term, so M0 learns without it")
            check = {"weight": weight, **PairwiseCheck(j.shape, None, None, len(j.cuts)).to_json()}
        else:
            report(f"boxes only and {masks}, without the image's colours: M0 tries BoxInst's colour-pairwise term "
                   f"(loop.box_start_pairwise {weight:g}), to be judged by GrabCut's {len(j.cuts)} masks that pass "
                   "the box check")
            model, _ = train_with(max(given, weight))
            found = check_pairwise(model, j, device, batch_size)
            report(found.line(weight))
            check = {"weight": weight, **found.to_json()}
        keep_verdict(check)
    if not check["kept"] and check["maps"] is not None:
        move_aside(out, out.with_name(out.name + "-pairwise-rejected"))
    # Kept: the trial is M0, and training returns at once from its final checkpoint.
    return train_with(max(given, weight) if check["kept"] else given)
