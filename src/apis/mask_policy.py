"""What each model of the active loop learns from, beside its answered points: the mask-source policy.

A training phase of M(step) (ensemble member j) learns, where ``model.pseudo_mask_weight`` > 0, from one pseudo
mask per pool object over its Ω (original image pixels), chosen by ``loop.pseudo_masks``:

* ``auto``: per dataset the no-model source (GrabCut from the box, the ellipse, the box) that agrees best with
  the answers at random points of steps ≤ step, per object the next where it fails the checks
  (:func:`apis.pseudo_masks.auto_pseudo_masks`); ``refined`` learns from auto's choice at step 0 too;
* ``refined`` at step ≥ 1: M(step−1)'s export of the pool with the answers of steps ≤ step
  (:meth:`MaskPolicy.refined_pseudo_masks`), kept in ``pseudo_masks/P{step}.npz`` of the run;
* a named source (``grabcut``, ``grabcut_points``, ``ellipse``, ``box``), judged beside the others all the same.

Each judgement of the sources is kept as ``pseudo_masks/sources-P{step}.json`` and printed as a table when it
differs from the one before. The same cached GrabCut masks give the colour evidence an export of M(step) needs
(:meth:`MaskPolicy.colour_evidence`: whether to trust the image's colours, and how far a cut is right per
object), and an M0 that learns from a shape tries BoxInst's colour-pairwise term
(:meth:`MaskPolicy.train_m0_judged`, :mod:`apis.box_start`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from apis.answerers import ProgressFor, Report, no_progress
from apis.atomic import write_json_atomic
from apis.box_start import (
    PairwiseJudge,
    box_teaches_masks,
    pairwise_judge,
    settle,
    start_weight,
    train_judged,
    trial_weight,
)
from apis.config import RunConfig
from apis.data.loader import PseudoMask
from apis.data.records import CocoDataset
from apis.export import export_masks, export_pseudo_masks
from apis.layout import PAIRWISE_PHASE
from apis.mask_checks import MAX_FAILING, NO_MODEL_SOURCES, SHAPE_SOURCES
from apis.pseudo_masks import (
    SourceChoice,
    auto_pseudo_masks,
    cached_grabcut_pseudo_masks,
    judge_no_model_sources,
    load_pseudo_masks,
    no_model_masks,
    save_pseudo_masks,
    training_pseudo_masks,
)
from apis.shape_prior import source_fit
from apis.store import Store
from apis.train import TrainResult, load_model

Points = Mapping[int, Sequence[tuple[int, ...]]]
"""Instance id → its answers (x, y, label, step) in original-image pixels, as :class:`TrainingSet` takes them."""
Fit = Callable[[float, Path, str, bool], tuple[Any, TrainResult]]
"""``fit(pairwise_weight, folder, progress_label, say_test_size)``: a fresh M0 at that BoxInst pairwise weight
trained into ``folder`` (resumed from its checkpoints there) → (model, result)."""


ColourEvidence = Callable[[Store, int], tuple[bool | None, dict[int, float] | None]]
"""(store, step) → whether an export of M(step) trusts the image's colours, and per object GrabCut's fit
(:meth:`MaskPolicy.colour_evidence`)."""


@dataclass(frozen=True)
class Targets:
    """The pseudo masks a training phase learns from (instance id → mask over Ω; None: none, points and boxes
    alone) and their source (``auto``'s choice, ``refined``, a named source; None without pseudo masks)."""

    pseudo: dict[int, PseudoMask] | None
    learnt_from: str | None


@dataclass
class MaskPolicy:
    """The mask-source policy of one run in ``root`` over the pool ``dataset``. GrabCut's masks are cached in
    ``cache_dir`` (shared by the arms of a comparison); ``device`` runs the refined export."""

    root: Path
    cache_dir: Path
    dataset: CocoDataset
    cfg: RunConfig
    device: torch.device | str = "cpu"
    report: Report = print
    progress: ProgressFor = no_progress
    _shown: tuple[int, dict] | None = field(default=None, init=False, repr=False)  # the step and table said last

    def targets(self, store: Store, step: int, member: int, points: Points, previous: Callable[[], Path]) -> Targets:
        """What M(step) member ``member`` learns from; ``previous()``: M(step−1)'s path (``refined`` only)."""
        if self.cfg.model.pseudo_mask_weight <= 0:
            return Targets(None, None)
        source = self.cfg.loop.pseudo_masks
        # Self-training's M0 has no model to learn from yet: it learns from the checked no-model choice.
        if source == "auto" or (source == "refined" and step == 0):
            box_teaches = box_teaches_masks(self.cfg.model, self.cfg.loop, self.cfg.loop.initial_points == 0)
            pseudo, choice = auto_pseudo_masks(self.cache_dir, self.dataset, points,
                                               self.progress(f"GrabCut masks P{step}"),
                                               judged=store.random_answers(max_step=step), box_teaches=box_teaches)
            self.report_sources(step, choice)
            return Targets(pseudo, choice.taught)
        if source == "refined":
            return Targets(self.refined_pseudo_masks(store, step, previous), source)
        pseudo = training_pseudo_masks(self.cache_dir, self.dataset, source, points,
                                       self.progress(f"GrabCut masks P{step}"))
        if member == 0:
            # A named shape is judged beside the other shape only: GrabCut's cut is what it avoids.
            judged = SHAPE_SOURCES if source in SHAPE_SOURCES else NO_MODEL_SOURCES
            self.report_sources(step, self.source_choice(store, step, judged))
        return Targets(pseudo, source)

    # ------------------------------------------------------------------------------- the sources judged
    def source_choice(self, store: Store, step: int, sources: Sequence[str] = NO_MODEL_SOURCES) -> SourceChoice:
        """The no-model ``sources`` judged on the answers at random points of steps ≤ ``step``
        (:meth:`apis.store.Store.random_answers`; cached GrabCut: no new cut)."""
        return judge_no_model_sources(self.cache_dir, self.dataset, store.random_answers(max_step=step),
                                      progress=self.progress(f"GrabCut masks P{step}"), sources=sources)[0]

    def report_sources(self, step: int, choice: SourceChoice) -> None:
        """Keep the source table in ``pseudo_masks/sources-P{step}.json``; print it, with a warning when the
        configured GrabCut fails the box check on a large share of the pool or a note when the other shape agrees
        with more answers than a configured one. Where the sources are judged as in the table kept for step − 1
        (the same answers judge the same masks: an Entropy run's random answers are P0's at every step) one line
        says so with the per-object counts instead, and another ensemble member of the same step adds nothing."""
        folder = self.root / "pseudo_masks"
        table = json.loads(json.dumps(choice.to_json()))  # as it reads back from the file
        before = folder / f"sources-P{step - 1}.json"
        write_json_atomic(table, folder / f"sources-P{step}.json")
        if self._shown == (step, table):
            return
        self._shown = (step, table)
        if before.is_file() and _judged(table) == _judged(json.loads(before.read_text())):
            # The same answers judged the same masks (an Entropy run's random answers are P0's at every step); only
            # the per-object fallbacks, checked against each object's own answers, may move.
            used = ", ".join(f"{s} {n}" for s, n in choice.used.items() if n)
            self.report(f"step {step}: mask sources judged as at step {step - 1} "
                        f"(pseudo_masks/sources-P{step}.json); per object: {used}")
            return
        configured = self.cfg.loop.pseudo_masks
        self.report(f"step {step}: mask sources judged on the answers they were not seeded with "
                    f"(loop.pseudo_masks: {configured})")
        chose = configured in ("auto", "refined")  # refined: M0 learns from auto's choice
        for line in choice.table_lines(chose):
            self.report("  " + line)
        by = {s.source: s for s in choice.scores}
        if configured.startswith("grabcut") and by["grabcut"].failing_share > MAX_FAILING:
            self.report(f"  warning: GrabCut's mask fails the box check (empty or short of the box's sides) for "
                        f"{by['grabcut'].failing_share:.0%} of the pool; loop.pseudo_masks: auto would use "
                        f"{choice.chosen}")
        elif (configured in SHAPE_SOURCES and choice.chosen != configured
              and all(s.accuracy is not None for s in choice.scores)):
            self.report(f"  note: the {choice.chosen} agrees with more of the answers than the {configured} "
                        f"({by[choice.chosen].accuracy:.0%} against {by[configured].accuracy:.0%}); "
                        f"loop.pseudo_masks: auto would judge GrabCut too and take the best")

    # ----------------------------------------------------------------------------------- the colours
    def trust_colours(self, store: Store, step: int) -> bool | None:
        """For ``loop.refine_masks: auto``: whether GrabCut from the box is the best no-model source on the
        answers at random points of steps ≤ ``step`` (its cached masks of the whole pool); None for the other
        refinements."""
        if self.cfg.loop.refine_masks != "auto":
            return None
        return self.source_choice(store, step).chosen == "grabcut"

    def colour_evidence(self, store: Store, step: int) -> tuple[bool | None, dict[int, float] | None]:
        """What an export of M(step) needs to know about the image's colours, from one reading of the cached GrabCut
        masks: :meth:`trust_colours`, and where the export cuts masks with GrabCut (``loop.refine_masks: grabcut``,
        or ``auto`` where the colours are trusted) per pool object the chance that GrabCut from the box is right at
        a random pixel of its box, learnt from the answers at random points of steps ≤ ``step`` on every object
        answered at one (:func:`apis.shape_prior.source_fit`), the factor of a cut mask's trust score; None where
        nothing is cut. ``apis export masks`` learns it on a sample of at most :data:`apis.export.JUDGE_OBJECTS` of
        them instead (built-in set, seed 0: Spearman 0.01–0.02 lower at five of seven steps)."""
        refine = self.cfg.loop.refine_masks
        if refine == "none":
            return None, None
        answers = store.random_answers(max_step=step)
        progress = self.progress(f"GrabCut masks P{step}")
        if refine == "auto":
            choice, masks = judge_no_model_sources(self.cache_dir, self.dataset, answers, progress=progress)
            if choice.chosen != "grabcut":
                return False, None
            return True, source_fit(self.dataset, answers, masks["grabcut"])
        masks = no_model_masks(self.cache_dir, self.dataset, sorted(answers), progress, ("grabcut",))
        return None, source_fit(self.dataset, answers, masks["grabcut"])

    # ------------------------------------------------------------------------------ self-training
    def refined_pseudo_masks(self, store: Store, step: int, previous: Callable[[], Path]) -> dict[int, PseudoMask]:
        """What M(step) learns from with ``loop.pseudo_masks: refined``: the export of M(step−1) (``previous()``,
        its checkpoint, asked for only where the masks are not kept yet) of the pool with the answers of steps ≤ step
        (accepted reviews included, as accepted) and ``loop.refine_masks``; GrabCut from the box where the export
        has no mask. Kept in ``pseudo_masks/P{step}.npz`` of the run, so every ensemble member and a resumed phase
        read the same masks."""
        path = self.root / "pseudo_masks" / f"P{step}.npz"
        if path.is_file():
            return load_pseudo_masks(path)
        model = load_model(previous(), self.device)
        exported = export_masks(model, self.dataset, store, self.device, self.cfg.loop.prediction_set,
                                max_step=step, batch_size=self.cfg.eval_batch_size,
                                refine=self.cfg.loop.refine_masks, trust_colours=self.trust_colours(store, step),
                                progress=self.progress(f"pseudo masks P{step}"))
        masks = export_pseudo_masks(exported, self.dataset)
        if missing := [a.id for a in self.dataset.instances() if a.id not in masks]:
            masks.update(cached_grabcut_pseudo_masks(self.cache_dir, self.dataset, None, missing))
        save_pseudo_masks(masks, path)
        return masks

    # ------------------------------------------------------------------ M0's judged colour-pairwise term
    def pairwise_weight(self, store: Store) -> float:
        """BoxInst's colour-pairwise weight of every training phase: ``model.pairwise_weight``, or the weight M0
        tried and kept (:meth:`train_m0_judged`)."""
        given = self.cfg.model.pairwise_weight
        check = store.phase(PAIRWISE_PHASE)
        return max(given, check["weight"]) if check is not None and check["kept"] else given

    def pairwise_trial(self, step: int, member: int, learnt_from: str | None) -> float | None:
        """The pairwise weight M0 tries (:func:`apis.box_start.trial_weight`: ``loop.box_start_pairwise`` from
        the boxes alone, ``loop.p0_pairwise`` from P0), or None where there is nothing to try: a later phase,
        another ensemble member (they follow M0's verdict), pseudo masks that carry the colours, or the term on
        everywhere already."""
        if step != 0 or member != 0:
            return None
        weight = start_weight(self.cfg.loop, self.cfg.loop.initial_points == 0, self.cfg.model.architecture)
        return trial_weight(weight, self.cfg.model.pairwise_weight, learnt_from)

    def train_m0_judged(self, store: Store, out: Path, weight: float, learnt_from: str | None, fit: Fit,
                        settle_folders: Callable[[Path, bool], None] = settle) -> TrainResult:
        """M0 whose pseudo masks lack the image's colours (from the boxes alone or from P0), trained into ``out``
        by ``fit`` without and with BoxInst's pairwise term at ``weight``; the one whose masks agree better with
        GrabCut's masks that pass the box check is M0 (:func:`apis.box_start.train_judged`); where too few pass to
        judge, M0 is trained once, with the term. The verdict is kept in the store (phase ``pairwise_check``) before
        ``settle_folders`` settles the folders, so a killed run resumes where it was and the later phases follow it."""
        given = self.cfg.model.pairwise_weight
        calls: list[float] = []

        def train_with(w: float, folder: Path) -> tuple[Any, TrainResult]:
            calls.append(w)  # both models share the test size: say it once
            # The trial beside M0 is "+ pairwise"; M0's own folder (M0 with or without the term) is "train M0".
            return fit(w, folder, "train M0" if folder == out else "train M0 + pairwise", len(calls) == 1)

        def judge() -> PairwiseJudge:
            return pairwise_judge(self.cache_dir, self.dataset, learnt_from, self.progress("GrabCut masks P0"))

        _, result = train_judged(weight, given, learnt_from, judge, out, train_with,
                                 lambda: store.phase(PAIRWISE_PHASE), lambda v: store.mark_phase(PAIRWISE_PHASE, v),
                                 lambda line: self.report("step 0: " + line), self.device, self.cfg.eval_batch_size,
                                 settle_folders, self.start_words())
        return result

    def start_words(self) -> str:
        """What M0 learns from beside its pseudo masks, in a report's words."""
        k = self.cfg.loop.initial_points
        return "boxes only" if k == 0 else f"{k} answered point{'s' if k > 1 else ''} per object"


def _judged(table: dict) -> dict:
    """A source table without its per-object counts (``used``): what the answers said of each source."""
    return {k: v for k, v in table.items() if k != "used"}
