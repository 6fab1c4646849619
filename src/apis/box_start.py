"""M0's colour cue: when M0 learns from BoxInst's colour-pairwise term, and whether it keeps it.

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

So where it can be judged, the term is not trusted blind. M0 is trained both without it and with it, and the two
models' masks are judged the way ``auto`` judges the shapes without answers: by their pixel agreement with GrabCut's
masks that pass the box check (:func:`apis.mask_checks.cross_agreement`), the one opinion on the objects' outlines
that does not come from the box. That agreement ranks models as their agreement with the true masks does (DSB
2018, seed 0: without the term
86.3% with the cuts and 85.7% with GT, with it 84.4% and 84.6%, the collapsed trial of an earlier version 76.7% and
76.9%), so the term is kept only where M0 with it agrees better than M0 without it. Judging the trial against the
shape instead (as the first version did) kept DSB's trial although the model without it was 1.8 AP better. Trying
it costs one more M0 training.

Where too few of GrabCut's masks pass to judge anything (under :data:`apis.mask_checks.MIN_CROSS_CHECKED`), M0
learns with the term, untried against M0 without it. That is where GrabCut's colour models fail on nearly every
object, as on Penn-Fudan's people, where every trial kept the term (+4.8 to +21.4 AP), and on the held-out photos
(7 passing cuts), where the P0 start with it gained 4.0 AP in issue 37's recipe. Penn-Fudan cut down to its images
where GrabCut fails (``benchmarks/grabcut_failing_subset.py``, 7 passing cuts) gives the same: M0 with the term,
26.9 → 35.6 mask AP from P0, 11.4 → 23.3 from the boxes alone. Its known losses, on DSB's nuclei (1.8–10.6 AP from
the boxes alone, 0.8 from P0), are on a set whose GrabCut masks pass (914 of them), so the judge decides there
(docs/evidence.md, "Where nothing can judge the term"). Nothing judges the ellipse there either, so from the boxes
alone it is not taught beside the term (:func:`box_teaches_masks`): that box-only M0 reaches 35.3 (seed 0), 89% of
the P0 start over three seeds.

A P0 start (one answered point per object) whose pseudo masks are a shape tries the term the same way
(``loop.p0_pairwise``): one point says where the object is, not where it ends. Penn-Fudan, seed 0: kept, M0 30.0 →
39.9 mask AP, pool IoU 0.703 → 0.756; DSB: kept by 2.1 points of agreement, pool IoU 0.840 → 0.850, mask AP 39.4 →
38.6 (docs/evidence.md, "The P0 start tries the colour-pairwise term too").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apis import mask_checks
from apis.config import LoopConfig
from apis.data.records import CocoDataset
from apis.export import export_masks, export_pseudo_masks
from apis.geometry import PixelWindow
from apis.mask_checks import SHAPE_SOURCES, check_mask, cross_agreement
from apis.models.condinst import BOXINST_ARCHITECTURES, CondInstConfig
from apis.pseudo_masks import Progress, no_model_masks


def box_start_pairwise(weight: float, learnt_from: str | None) -> float:
    """The weight of BoxInst's colour-pairwise loss to try for M0 (``weight``: ``loop.box_start_pairwise`` for a
    box-only start, ``loop.p0_pairwise`` for a P0 start): ``weight`` where its pseudo masks do not follow the
    image's colours (``learnt_from`` a shape, the ellipse or the box, as ``auto`` picks where GrabCut's masks fail
    the box check; or None, no pseudo masks), else 0: GrabCut's masks, or a model's refined export, carry the
    colours already."""
    if weight < 0:
        raise ValueError(f"the pairwise weight must be ≥ 0, got {weight}")
    return weight if learnt_from is None or learnt_from in SHAPE_SOURCES else 0.0


def start_weight(loop: LoopConfig, box_only: bool, architecture: str = "condinst") -> float:
    """The pairwise weight the config asks M0 to try: ``loop.box_start_pairwise`` from the boxes alone,
    ``loop.p0_pairwise`` from answered points; 0 for an ``architecture`` (``model.architecture``) without BoxInst's
    losses (:data:`apis.models.condinst.BOXINST_ARCHITECTURES`; Mask R-CNN), which could not train with the term."""
    if architecture not in BOXINST_ARCHITECTURES:
        return 0.0
    return loop.box_start_pairwise if box_only else loop.p0_pairwise


def box_teaches_masks(model: CondInstConfig, loop: LoopConfig, box_only: bool) -> bool:
    """Whether the boxes themselves teach M0's masks: BoxInst's projection term and its colour-pairwise term (given
    in ``model.pairwise_weight`` or tried by :func:`start_weight`), for an architecture that trains them. Where they
    do, ``auto`` leaves a shape nothing judges untaught (:func:`apis.pseudo_masks.auto_pseudo_masks`): nothing can
    judge the term there either, so M0 learns with it (:func:`train_judged`), and the ellipse taught blind beside it
    cut off the limbs the term finds (Penn-Fudan where GrabCut fails, box-only M0: 23.3 mask AP with the ellipse,
    35.3 without, seed 0)."""
    if model.architecture not in BOXINST_ARCHITECTURES or model.box_projection_weight <= 0:
        return False
    return model.pairwise_weight > 0 or start_weight(loop, box_only, model.architecture) > 0


def trial_weight(weight: float, given: float, learnt_from: str | None) -> float | None:
    """The pairwise weight M0 tries (:func:`box_start_pairwise`), or None where there is nothing
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
    """The verdict on BoxInst's pairwise term for M0: the agreement of M0's masks with GrabCut's passing masks
    (:func:`model_agreement`) trained with the term (``maps``) and without it (``without``), beside the ``shape``'s
    (``bar``, what M0 learnt from), over ``objects`` objects; None where there was nothing to judge with. Kept in the
    run's store."""

    shape: str
    maps: float | None
    without: float | None
    bar: float | None
    objects: int

    @property
    def judged(self) -> bool:
        """Whether both models were judged (enough of GrabCut's masks passed the box check)."""
        return self.maps is not None and self.without is not None

    @property
    def kept(self) -> bool:
        """The term is kept where M0's masks agree better with the cuts with it than without it: the same judge
        ranks the models as their agreement with the true masks does (DSB 2018, seed 0: 84.4% against 86.3%, and
        against GT 84.6% against 85.7%: left out; Penn-Fudan: 85% against 73%: kept). Where nothing could judge,
        it is kept untried (module doc: GrabCut's masks fail there, and so far the term has won wherever they do)."""
        return not self.judged or self.maps > self.without

    def to_json(self) -> dict:
        return {**asdict(self), "kept": self.kept}

    def line(self, weight: float) -> str:
        if not self.judged:
            return (f"only {self.objects} of GrabCut's masks pass the box check (under "
                    f"{mask_checks.MIN_CROSS_CHECKED}): nothing can judge BoxInst's colour-pairwise term, so M0 "
                    f"learns with it (weight {weight:g}), as it won wherever GrabCut's masks failed")
        verdict = "kept" if self.kept else "left out: M0 is the model trained without it"
        return (f"with BoxInst's colour-pairwise term (weight {weight:g}) M0's masks agree "
                f"{_share(self.maps)} with GrabCut's {self.objects} masks that pass the box check, without it "
                f"{_share(self.without)} (the {self.shape} it learnt from: {_share(self.bar)}); the term is {verdict}")


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
def model_masks(model, judge: PairwiseJudge, device: torch.device | str = "cpu", batch_size: int = 8
                ) -> dict[int, tuple[PixelWindow, np.ndarray]]:
    """``model``'s thresholded maps of the judge's objects (no answer forced: there is none): instance id → (Ω
    window, h×w bool); an object the model gave no mask is empty everywhere, so a collapse cannot hide in the
    gaps."""
    dataset = judge.dataset
    exported = export_masks(model, dataset, {}, device=device, batch_size=batch_size, instance_ids=judge.cuts)
    maps = {i: (win, np.zeros_like(cut)) for i, (win, cut) in judge.cuts.items()}
    maps.update({i: (m.window, m.mask) for i, m in export_pseudo_masks(exported, dataset).items() if i in maps})
    return maps


def model_agreement(model, judge: PairwiseJudge, device: torch.device | str = "cpu", batch_size: int = 8
                    ) -> float | None:
    """:func:`model_masks` against GrabCut's masks: the share of Ω's pixels where the two agree, averaged over the
    objects (:func:`apis.mask_checks.cross_agreement`); None where the judge is not ready."""
    if not judge.ready:
        return None
    return cross_agreement(model_masks(model, judge, device, batch_size), judge.cuts).share


def trial_folders(out: Path) -> tuple[Path, Path, Path]:
    """Beside M0's folder ``out``: where the trial with the term is trained, where it goes when it is left out,
    and where M0 without the term goes when the trial takes its place."""
    return (out.with_name(out.name + "-pairwise"), out.with_name(out.name + "-pairwise-rejected"),
            out.with_name(out.name + "-without-pairwise"))


def settle(out: Path, kept: bool) -> None:
    """Put the verdict's M0 in ``out``, once (a resumed run finds it done; a run killed between the two moves of a
    kept trial finishes them): kept, M0 without the term moves aside and the trial takes its place; left out, the
    trial moves to its rejected folder."""
    trial, rejected, without = trial_folders(out)
    if not trial.exists():
        return
    if kept:
        if out.exists() and not without.exists():
            os.replace(out, without)
        if not out.exists():
            os.replace(trial, out)
    elif not rejected.exists():
        os.replace(trial, rejected)


def train_judged(weight: float, given: float, learnt_from: str | None, judge: Callable[[], PairwiseJudge],
                 out: Path, train_with: Callable[[float, Path], tuple[Any, Any]], verdict: Callable[[], dict | None],
                 keep_verdict: Callable[[dict], None], report: Callable[[str], None],
                 device: torch.device | str = "cpu", batch_size: int = 8,
                 settle_folders: Callable[[Path, bool], None] = settle, start: str = "boxes only"
                 ) -> tuple[Any, Any]:
    """M0, with or without BoxInst's pairwise term, judged. Where the ``judge`` is ready, M0 is trained into ``out``
    without the term (``given``: the config's ``model.pairwise_weight``, below ``weight``) and once more with it at
    ``weight`` beside it (:func:`trial_folders`); the term is kept where those masks agree better with GrabCut's
    passing masks (:class:`PairwiseCheck`), and :func:`settle` puts the winner in ``out``. Where it is not, M0 is
    trained once, with the term (module doc). ``train_with(w, folder)`` builds a model with pairwise weight ``w``,
    trains it into ``folder`` (resuming from its checkpoints) and returns (model, result); ``verdict()`` reads the
    verdict kept by ``keep_verdict`` (a dict of :meth:`PairwiseCheck.to_json` and the weight), None before it, so a
    killed command resumes where it was; ``settle_folders``: :func:`settle`, on one rank of a DDP run; ``start``:
    what M0 learns from beside the pseudo masks, in the report's words. Returns what the last ``train_with``
    returned: M0's model and result."""
    check = verdict()
    if check is None:
        j = judge()
        masks = f"its pseudo masks are the {learnt_from}" if learnt_from else "it learns from no pseudo mask"
        if not j.ready:
            check = PairwiseCheck(j.shape, None, None, None, len(j.cuts))
            report(f"{start} and {masks}, without the image's colours, and {check.line(weight)}")
        else:
            report(f"{start} and {masks}, without the image's colours: M0 tries BoxInst's colour-pairwise term "
                   f"at weight {weight:g} beside M0 without it, and keeps the one whose masks agree "
                   f"better with GrabCut's {len(j.cuts)} masks that pass the box check")
            without = model_agreement(train_with(given, out)[0], j, device, batch_size)
            trial = model_agreement(train_with(max(given, weight), trial_folders(out)[0])[0], j, device, batch_size)
            check = PairwiseCheck(j.shape, trial, without, j.bar, len(j.cuts))
            report(check.line(weight))
        check = {"weight": weight, **check.to_json()}
        keep_verdict(check)
        # Read back: in a DDP run every rank then follows rank 0's verdict (the loop's store broadcasts it).
        check = verdict() or check
    settle_folders(out, check["kept"])
    # Judged, both are trained and the model in ``out`` returns at once from its final checkpoint; unjudged, M0 is
    # trained here, after its verdict is kept, so a killed run resumes with the same one.
    return train_with(max(given, weight) if check["kept"] else given, out)
