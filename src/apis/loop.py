"""The active loop: P0 → M0 → (review → select → answer → fine-tune → evaluate)*.

This is the only module that knows the order of the phases. Every phase reads its inputs from the
run directory (store + checkpoints) and records its completion in the store (``phases`` table), so a
run killed at any moment and started again resumes at the phase it was in:

* ``p0``: one random point per instance, answered; answers and the phase mark commit together.
* ``train_0`` / ``train_s``: training resumes from its own checkpoint; the phase records the model
  (``train_s_m{j}``: ensemble member j, for prediction set M).
* ``eval_s``: COCO metrics of M(s) on the validation split.
* ``review_s`` (simulation, ``loop.review.per_step`` > 0): the simulated reviewer judges the least trusted
  masks of M(s)'s pool export against their GT masks; each decision is stored as it is made and a resumed
  phase judges only the objects it has not judged yet. It runs just before ``select_{s+1}``, so the last
  step's export, which no later step could use, is not reviewed.
* ``select_s``: the chosen pixels (and what M(s−1) believed there) are recorded before any is asked,
  so a restart asks exactly the same questions. Review decisions made about the exports of steps < s
  (people's or the simulated reviewer's, :meth:`apis.store.Store.reviews`) shape it: an object whose
  standing decision is an accept is not asked about any more (its accepted mask is final, see
  :mod:`apis.export`); an object whose standing decision is a reject gets ``loop.review_points`` extra
  pixels, the strategy's next best, beside its usual one. A reject is acted on once: at the first selection
  after it was made (the phase records the decision ids it used); from then on the object gets one point a
  step again until someone rejects it again.
* ``answer_s``: the answers to ``select_s``, stored in one transaction with the phase mark, so no
  answer is lost or stored twice.

A run directory holds ``apis.sqlite``, ``models/step{s}/`` and ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from apis import queue
from apis.atomic import write_json_atomic
from apis.box_start import PairwiseJudge, pairwise_judge, settle, train_judged, trial_weight
from apis.config import RunConfig, dump_config
from apis.cost import CostModel, drawn_boxes, review_decisions
from apis.data.loader import PseudoMask, TrainingSet
from apis.data.records import CocoDataset, encode_mask
from apis.data.sizes import MIN_OBJECT_PIXELS, box_objects, median_side_at
from apis.evaluate import evaluate
from apis.export import export_masks, export_pseudo_masks, pool_mask_ious, trust_rank_correlation, worst_caught
from apis.layout import (
    PAIRWISE_PHASE,
    STORE_FILE,
    answer_phase,
    eval_phase,
    model_dir,
    recorded_model,
    review_phase,
    select_phase,
    train_phase,
)
from apis.mask_checks import MAX_FAILING, NO_MODEL_SOURCES, SHAPE_SOURCES
from apis.models import build_model, model_config_for
from apis.models.condinst import CondInst
from apis.models.ensemble import Ensemble
from apis.names import NEEDS_GT, uses_ensemble
from apis.oracle import (
    SIMULATED_REVIEWER,
    MaskOracle,
    MaskReviewer,
    Oracle,
    Query,
    ask,
    initial_answers,
    initial_points,
)
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
from apis.selection.instances import instance_scores
from apis.selection.points import get_strategy
from apis.selection.select import Choice, boundary_distance, select_points
from apis.shape_prior import source_fit
from apis.store import BoxProgress, Store
from apis.train import Schedule, TrainResult, load_model, pick_device, train
from apis.yardsticks import PoolSample, pool_ious, pool_sample


def val_metrics(model: CondInst, val_set: CocoDataset, device: torch.device, step_dir: Path, batch_size: int,
                progress: Callable[[int, int], None] | None) -> dict:
    """COCO metrics of ``model`` on the validation split as an ``eval_s`` phase records them (segm, bbox,
    seconds); the COCO result json goes to ``step_dir/val_results.json``."""
    ev = evaluate(model, val_set, device, step_dir / "val_results.json", batch_size=batch_size, progress=progress)
    return {"segm": ev.segm, "bbox": ev.bbox, "seconds": ev.seconds}


def metrics_line(step: int, metrics: dict) -> str:
    return f"step {step}: mask AP {metrics['segm']['AP']:.2f}  box AP {metrics['bbox']['AP']:.2f}"


Report = Callable[[str], None]


class RunMismatch(ValueError):
    """A run directory was resumed with another strategy or seed than it was started with."""


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


@dataclass
class ActiveRun:
    """One strategy with one seed in ``root``. ``oracle`` answers the questions (a :class:`MaskOracle`
    in simulation); ``gt_masks`` gives GT masks for the oracle-aware strategies and diagnostics."""

    root: Path
    cfg: RunConfig
    train_set: CocoDataset
    val_set: CocoDataset
    strategy: str
    seed: int
    oracle: Oracle | None
    gt_masks: Callable[[int], object] | None = None
    report: Report = print
    progress: Callable[[str, int, int], None] | None = None
    people: bool = False  # questions after P0 go to people through the store's queue (apis serve)
    # GrabCut masks (training's pseudo masks, the yardsticks) are cached here; a comparison shares one
    # folder between its arms. None: ``root/cache``.
    cache_dir: Path | None = None
    # One selection pass over the pool; apis.distributed.DistributedRun swaps in its sharded pass.
    choose_points = staticmethod(select_points)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else self.root / "cache"
        self.device = pick_device(self.cfg.device)
        get_strategy(self.strategy)  # an unknown name fails now, not after M0 has trained
        if self.people and self.strategy in NEEDS_GT:
            raise ValueError(f"strategy {self.strategy!r} reads GT masks; people cannot be asked its points")
        if self.cfg.loop.review.per_step > 0 and (self.people or self.gt_masks is None):
            raise ValueError(f"loop.review.per_step {self.cfg.loop.review.per_step}: the simulated reviewer judges "
                             "masks with the GT masks, so it runs in simulation only; people review with `apis "
                             "serve --review-step S` or `apis queue export --review-step S`; set per_step 0")
        if not (self.root / "config.yaml").exists():
            dump_config(self.cfg, self.root / "config.yaml")

    # --------------------------------------------------------------------------------- the method
    def run(self, steps: int | None = None) -> list[StepResult]:
        steps = self.cfg.loop.steps if steps is None else steps
        with self.open_store() as store:
            self.check_identity(store, steps)
            self.initial_points(store)
            model_path = self.train_step(store, 0, init=None)
            results = [self.evaluate_step(store, 0, model_path)]
            for s in range(1, steps + 1):
                self.review(store, s - 1, model_path)
                choices = self.select(store, s, model_path)
                self.answer(store, s, choices)
                model_path = self.train_step(store, s, init=model_path)
                results.append(self.evaluate_step(store, s, model_path))
        return results

    def open_store(self) -> Store:
        return Store.open(self.root / STORE_FILE)

    # ------------------------------------------------------------------------------------- phases
    def check_identity(self, store: Store, steps: int) -> None:
        """A resumed run must be the same run: refuse another seed than P0's, or another strategy than
        the one that chose the points already asked."""
        p0 = store.phase("p0")
        if p0 is not None and p0.get("seed") != self.seed:
            raise RunMismatch(f"{self.root}: P0 was drawn with seed {p0.get('seed')}, not {self.seed}; "
                              f"pass --seed {p0.get('seed')} or use a new folder")
        if steps == 0:
            return
        arm = store.phase("arm")
        if arm is None:
            store.mark_phase("arm", {"strategy": self.strategy, "seed": self.seed, "people": self.people})
        elif (arm["strategy"], arm["seed"]) != (self.strategy, self.seed):
            raise RunMismatch(f"{self.root}: this run chooses points with {arm['strategy']!r} (seed {arm['seed']}), "
                              f"not {self.strategy!r} (seed {self.seed}); pass the same options or use a new folder")

    def initial_points(self, store: Store) -> None:
        if store.phase("p0") is not None:
            return
        if store.box_project() is not None and store.box_pool() is None:
            raise WaitingForBoxes(store.box_progress())  # the train json has no boxes until people have drawn them
        store.add_instances(self.train_set, "train")
        if self.people and self.cfg.loop.initial_points == 1:
            self.initial_points_by_people(store)
            return
        if self.people and self.cfg.loop.initial_points > 1:
            raise ValueError(f"loop.initial_points {self.cfg.loop.initial_points}: people are asked one P0 point "
                             f"per instance (or none, with 0); set 1 or 0")
        k = self.cfg.loop.initial_points
        answers = initial_answers(self.train_set, self.oracle, self.seed, k=k) if k > 0 else []
        store.add_points(answers, phase="p0", phase_payload={"points": len(answers), "seed": self.seed})
        self.report(f"P0: {len(answers)} points answered" if k > 0 else "P0: none (M0 learns from boxes alone)")

    def train_step(self, store: Store, step: int, init: Path | None) -> Path:
        """Train M(step) (from ``init`` = M(step−1), or ImageNet weights at step 0) and, for prediction
        set M, the other ensemble members, each from its own previous member. Returns M(step)'s path."""
        path = self.train_member(store, step, 0, init)
        for j in range(1, self.ensemble_size):
            self.train_member(store, step, j, self.member_path(store, step - 1, j) if step > 0 else None)
        return path

    def train_member(self, store: Store, step: int, member: int, init: Path | None) -> Path:
        name = train_phase(step, member)
        done = store.phase(name)
        if done is not None:
            return self.root / done["model"]
        schedule = self.cfg.initial if step == 0 else self.cfg.finetune
        points = {i: [(p.x, p.y, p.label, p.step) for p in ps] for i, ps in store.points(max_step=step).items()}
        out = model_dir(self.root, step, member)
        label = f"M{step} member {member}" if member else f"M{step}"
        self.report(f"step {step}: training {label}{' from ImageNet weights' if init is None else ''} "
                    f"({schedule.iterations} iterations)")
        pseudo, learnt_from = None, None
        if self.cfg.model.pseudo_mask_weight > 0:
            source = learnt_from = self.cfg.loop.pseudo_masks
            # Self-training's M0 has no model to learn from yet: it learns from the checked no-model choice.
            if source == "auto" or (source == "refined" and step == 0):
                pseudo, choice = auto_pseudo_masks(self.cache_dir, self.train_set, points,
                                                   self._progress(f"GrabCut masks P{step}"),
                                                   judged=store.random_answers(max_step=step))
                learnt_from = choice.chosen
                self.report_sources(step, choice)
            elif source == "refined" and step > 0:
                pseudo = self.refined_pseudo_masks(store, step)
            else:
                pseudo = training_pseudo_masks(self.cache_dir, self.train_set, source, points,
                                               self._progress(f"GrabCut masks P{step}"))
                if member == 0:
                    # A named shape is judged beside the other shape only: GrabCut's cut is what it avoids.
                    judged = SHAPE_SOURCES if source in SHAPE_SOURCES else NO_MODEL_SOURCES
                    self.report_sources(step, self.source_choice(store, step, judged))
        data = TrainingSet(self.train_set, points=points, pseudo_masks=pseudo)
        trial = self.pairwise_trial(step, member, learnt_from)
        if trial is not None:
            result = self.train_box_start_m0(store, data, schedule, out, trial, learnt_from)
        else:
            model = self.build_model(member, self.pairwise_weight(store))
            self.report_test_size(step, member, model)
            result = train(model, data, schedule, out, seed=self.data_seed(step, member), device=self.device,
                           init=init, progress=self._progress(f"train {label}"))
        # Relative to the run folder, so a moved or copied run (or a compare arm) still finds its models.
        model = os.path.relpath(result.final.resolve(), self.root.resolve())
        store.mark_phase(name, {"model": model, "seconds": round(result.seconds, 2)})
        return result.final

    def report_test_size(self, step: int, member: int, model: CondInst) -> None:
        if step == 0 and member == 0 and model.cfg.test_min_size != self.cfg.model.test_min_size:
            given = self.cfg.model
            median = median_side_at(box_objects(self.train_set), given.test_min_size, given.max_size)
            self.report(f"step 0: the median box is {median:.1f} px across at test size {given.test_min_size}, "
                        f"under {MIN_OBJECT_PIXELS:g}: evaluating, selecting and exporting at {model.cfg.test_min_size}"
                        f" (model.max_test_upscale {given.max_test_upscale:g}; training sizes unchanged)")

    def pairwise_weight(self, store: Store) -> float:
        """BoxInst's colour-pairwise weight of every training phase: ``model.pairwise_weight``, or the box-only
        start's where M0 tried it and kept it (:meth:`train_box_start_m0`)."""
        given = self.cfg.model.pairwise_weight
        check = store.phase(PAIRWISE_PHASE)
        return max(given, check["weight"]) if check is not None and check["kept"] else given

    def pairwise_trial(self, step: int, member: int, learnt_from: str | None) -> float | None:
        """The pairwise weight M0 of a box-only start tries (:func:`apis.box_start.trial_weight`), or None
        where there is nothing to try: a later phase, another ensemble member (they follow M0's verdict), a P0
        start, pseudo masks that carry the colours, or the term on everywhere already."""
        if step != 0 or member != 0 or self.cfg.loop.initial_points != 0:
            return None
        return trial_weight(self.cfg.loop.box_start_pairwise, self.cfg.model.pairwise_weight, learnt_from)

    def train_box_start_m0(self, store: Store, data: TrainingSet, schedule: Schedule, out: Path, weight: float,
                           learnt_from: str | None) -> TrainResult:
        """M0 of a box-only start whose pseudo masks lack the image's colours: trained without and with BoxInst's
        pairwise term at ``weight``, and the one whose masks agree better with GrabCut's masks that pass the box
        check is M0 (:func:`apis.box_start.train_judged`). The verdict is kept in the store (phase
        ``pairwise_check``) before the folders are settled, so a killed run resumes where it was and the later
        phases follow it."""

        trained: list[float] = []

        def train_with(w: float, folder: Path) -> tuple[CondInst, TrainResult]:
            model = self.build_model(0, w)
            if not trained:  # both models share the test size: say it once
                self.report_test_size(0, 0, model)
            trained.append(w)
            label = "train M0" if w == self.cfg.model.pairwise_weight else "train M0 + pairwise"
            return model, train(model, data, schedule, folder, seed=self.data_seed(0), device=self.device,
                                progress=self._progress(label))

        def judge() -> PairwiseJudge:
            return pairwise_judge(self.cache_dir, self.train_set, learnt_from, self._progress("GrabCut masks P0"))

        _, result = train_judged(weight, self.cfg.model.pairwise_weight, learnt_from, judge, out, train_with,
                                 lambda: store.phase(PAIRWISE_PHASE), lambda v: store.mark_phase(PAIRWISE_PHASE, v),
                                 lambda line: self.report("step 0: " + line), self.device, self.cfg.eval_batch_size,
                                 self.settle_m0)
        return result

    def settle_m0(self, out: Path, kept: bool) -> None:
        """Put the box-only start's judged M0 in ``out`` (:func:`apis.box_start.settle`; on one rank of a DDP
        run)."""
        settle(out, kept)

    def source_choice(self, store: Store, step: int, sources: Sequence[str] = NO_MODEL_SOURCES) -> SourceChoice:
        """The no-model ``sources`` judged on the answers at random points of steps ≤ ``step``
        (:meth:`apis.store.Store.random_answers`; cached GrabCut: no new cut)."""
        return judge_no_model_sources(self.cache_dir, self.train_set, store.random_answers(max_step=step),
                                      progress=self._progress(f"GrabCut masks P{step}"), sources=sources)[0]

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
        progress = self._progress(f"GrabCut masks P{step}")
        if refine == "auto":
            choice, masks = judge_no_model_sources(self.cache_dir, self.train_set, answers, progress=progress)
            if choice.chosen != "grabcut":
                return False, None
            return True, source_fit(self.train_set, answers, masks["grabcut"])
        masks = no_model_masks(self.cache_dir, self.train_set, sorted(answers), progress, ("grabcut",))
        return None, source_fit(self.train_set, answers, masks["grabcut"])

    def report_sources(self, step: int, choice: SourceChoice) -> None:
        """Print the source table, keep it in ``pseudo_masks/sources-P{step}.json``, and warn in one line when
        the configured GrabCut fails the box check on a large share of the pool, or note it when the other shape
        agrees with more answers than a configured one."""
        write_json_atomic(choice.to_json(), self.root / "pseudo_masks" / f"sources-P{step}.json")
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

    def refined_pseudo_masks(self, store: Store, step: int) -> dict[int, PseudoMask]:
        """What M(step) learns from with ``loop.pseudo_masks: refined``: M(step−1)'s export of the pool with
        the answers of steps ≤ step (accepted reviews included, as accepted) and ``loop.refine_masks``; GrabCut
        from the box where the export has no mask. Kept in ``pseudo_masks/P{step}.npz`` of the run, so every
        ensemble member and a resumed phase read the same masks."""
        path = self.root / "pseudo_masks" / f"P{step}.npz"
        if path.is_file():
            return load_pseudo_masks(path)
        model = load_model(self.member_path(store, step - 1, 0), self.device)
        exported = export_masks(model, self.train_set, store, self.device, self.cfg.loop.prediction_set,
                                max_step=step, batch_size=self.cfg.eval_batch_size,
                                refine=self.cfg.loop.refine_masks, trust_colours=self.trust_colours(store, step),
                                progress=self._progress(f"pseudo masks P{step}"))
        masks = export_pseudo_masks(exported, self.train_set)
        if missing := [a.id for a in self.train_set.instances() if a.id not in masks]:
            masks.update(cached_grabcut_pseudo_masks(self.cache_dir, self.train_set, None, missing))
        save_pseudo_masks(masks, path)
        return masks

    def member_path(self, store: Store, step: int, member: int) -> Path:
        path = recorded_model(self.root, store.phase, step, member)
        if path is None:
            raise RuntimeError(f"{self.root}: member {member} of step {step} is not trained")
        return path

    def selection_model(self, store: Store, step: int, model: CondInst) -> CondInst | Ensemble:
        """``model`` (M(step), loaded), or for prediction set M the ensemble of it and its other members."""
        if self.ensemble_size == 1:
            return model
        rest = [load_model(self.member_path(store, step, j), self.device) for j in range(1, self.ensemble_size)]
        return Ensemble([model, *rest])

    @property
    def ensemble_size(self) -> int:
        return self.cfg.loop.ensemble_size if uses_ensemble(self.cfg.loop.prediction_set) else 1

    def evaluate_step(self, store: Store, step: int, model_path: Path) -> StepResult:
        name = eval_phase(step)
        done = store.phase(name)
        if done is None:
            model = load_model(model_path, self.device)
            done = val_metrics(model, self.val_set, self.device, model_dir(self.root, step),
                               self.cfg.eval_batch_size, self._progress(f"evaluate M{step}"))
            done.update(self.pool_iou(self.selection_model(store, step, model), store, step))
            if (ys := self.yardsticks(store, step)) is not None:
                done["yardsticks"] = ys
            store.mark_phase(name, done)
            self.report(metrics_line(step, done))
        return self.step_result(store, step, done)

    def review(self, store: Store, step: int, model_path: Path) -> None:
        """``review_{step}``: the simulated reviewer judges the ``loop.review.per_step`` least trusted masks of
        M(step)'s pool export (lowest ``apis_score``, accepted ones left out) against their GT masks and stores
        each decision as reviewer ``"simulated"``. Off when per_step is 0, and skipped once ``select_{step+1}``
        is recorded (a run resumed with review turned on does not review after the fact)."""
        n = self.cfg.loop.review.per_step
        name = review_phase(step)
        if n <= 0 or store.phase(name) is not None or store.phase(select_phase(step + 1)) is not None:
            return
        model = self.selection_model(store, step, load_model(model_path, self.device))
        kw = dict(max_step=step, batch_size=self.cfg.eval_batch_size, progress=self._progress(f"review M{step}"))
        # The trust score is the model's map's, the same refined or not: rank the whole pool without GrabCut, then
        # export only the masks to judge with the run's refinement. One prediction pass and per_step GrabCuts.
        ranked = export_masks(model, self.train_set, store, self.device, self.cfg.loop.prediction_set, refine="none",
                              **kw)
        judged = {d.instance_id for d in self.simulated_decisions(store, step)}  # before a crash, if any
        pick = sorted((e for e in ranked.instances if not e.reviewed and e.annotation_id not in judged),
                      key=lambda e: (e.score, e.annotation_id))[: max(0, n - len(judged))]
        shown = ranked
        if pick and self.cfg.loop.refine_masks != "none":
            trust, fit = self.colour_evidence(store, step)
            shown = export_masks(model, self.train_set, store, self.device, self.cfg.loop.prediction_set,
                                 refine=self.cfg.loop.refine_masks, trust_colours=trust,
                                 instance_ids={e.annotation_id for e in pick}, cut_fit=fit, **kw)
        anns = {a["id"]: a for a in shown.coco["annotations"]}
        images = self.train_set.image_by_id()
        reviewer = MaskReviewer(self.gt_masks, self.cfg.loop.review.accept_iou)
        for e in pick:
            im = images[e.image_id]
            # A missing mask is shown (and judged) as an empty one, as on the review page: rejecting it asks for
            # more points.
            mask = anns[e.annotation_id].get("segmentation") or encode_mask(np.zeros((im.height, im.width), np.uint8))
            decision, _ = reviewer.judge(e.annotation_id, mask)
            store.add_review(e.annotation_id, step, decision, SIMULATED_REVIEWER, mask, apis_score=e.score)
        made = self.simulated_decisions(store, step)
        ious = [reviewer.judge(d.instance_id, d.mask)[1] for d in made]
        payload = {"reviewer": SIMULATED_REVIEWER, "reviewed": len(made),
                   "accepted": sum(d.decision == "accept" for d in made),
                   "rejected": sum(d.decision == "reject" for d in made),
                   "mean_iou": round(float(np.mean(ious)), 5) if ious else None}
        store.mark_phase(name, payload)
        self.report(f"step {step}: {payload['reviewed']} masks reviewed (simulated): {payload['accepted']} accepted, "
                    f"{payload['rejected']} rejected")

    @staticmethod
    def simulated_decisions(store: Store, step: int) -> list:
        """The simulated reviewer's standing decisions about M(step)'s export, oldest first."""
        return [d for d in store.review_log(step) if d.reviewer == SIMULATED_REVIEWER and d.undone_at is None]

    def review_plan(self, store: Store, step: int) -> tuple[set[int], dict[int, int]]:
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

    def select(self, store: Store, step: int, model_path: Path) -> list[Choice]:
        name = select_phase(step)
        done = store.phase(name)
        if done is None:
            accepted, rejects = self.review_plan(store, step)
            model = self.selection_model(store, step - 1, load_model(model_path, self.device))
            labelled = {i: [(p.x, p.y) for p in ps] for i, ps in store.points().items()}
            asked = {a.id for a in self.train_set.instances()} - accepted if accepted else None
            extra = {i: self.cfg.loop.review_points for i in rejects} if self.cfg.loop.review_points else None
            choices = self.choose_points(model, self.train_set, labelled, self.strategy, step, self.seed,
                                         self.device, batch_size=self.cfg.eval_batch_size,
                                         prediction_set=self.cfg.loop.prediction_set, gt_masks=self.gt_masks,
                                         progress=self._progress(f"select P{step}"),
                                         alternates=queue.ALTERNATES if self.people else 0,
                                         instance_ids=asked, extra=extra)
            choices = self.limit(choices, step, model, keep=set(rejects))
            done = {"choices": [dataclasses.asdict(c) for c in choices]}
            if accepted or rejects:
                done["review"] = {"accepted": sorted(accepted), "rejected": sorted(rejects),
                                  "rejects_used": sorted(rejects.values()),
                                  "review_points": self.cfg.loop.review_points}
            store.mark_phase(name, done)
        return [Choice(**{**c, "alternates": [tuple(p) for p in c.get("alternates", [])]}) for c in done["choices"]]

    def answer(self, store: Store, step: int, choices: list[Choice]) -> None:
        name = answer_phase(step)
        if store.phase(name) is not None:
            return
        if self.people:
            self.answer_by_people(store, step, choices)
            return
        queries = [Query(c.instance_id, c.image_id, c.x, c.y) for c in choices]
        progress = self._progress(f"answer P{step}") or (lambda *_: None)
        progress(0, len(queries))
        answers = ask(self.oracle, queries, step, self.strategy)
        progress(0, len(queries))  # answered, not yet stored: the moment a crash must not lose them
        diag = self.diagnostics(choices, [a.label for a in answers])
        store.add_points(answers, phase=name, phase_payload={"answered": len(answers), **diag})
        progress(len(queries), len(queries))
        self.report(f"step {step}: {len(answers)} points answered ({self.strategy})")

    def initial_points_by_people(self, store: Store) -> None:
        """P0 asked of people: one uniform random pixel per instance, with further random pixels in
        reserve for "can't tell"."""
        # The asked pixel is the simulation's P0 pixel for the same seed, so human and simulated runs pair up.
        first = initial_points(self.train_set, self.seed)
        reserve: dict[int, list[tuple[int, int]]] = {}
        for q in initial_points(self.train_set, self.seed + 1, k=queue.ALTERNATES + 1):
            reserve.setdefault(q.instance_id, []).append((q.x, q.y))
        alternates = {q.instance_id: [p for p in reserve.get(q.instance_id, []) if p != (q.x, q.y)][: queue.ALTERNATES]
                      for q in first}
        posted = queue.post(store, 0, first, alternates, strategy="random")
        if posted:
            self.report(f"P0: {posted} questions posted for people")
        answers = queue.collect(store, 0)
        if answers is None:
            raise WaitingForPeople(0, queue.open_count(store, 0))
        queue.consume(store, 0, phase="p0", payload={"points": len(answers), "seed": self.seed})

    def answer_by_people(self, store: Store, step: int, choices: list[Choice]) -> None:
        """Post the questions (once) and take the answers when none is open; until then stop with
        :class:`WaitingForPeople`, so the run resumes here once people have answered."""
        name = answer_phase(step)
        posted = queue.post(store, step, choices, {c.instance_id: c.alternates for c in choices},
                            strategy=self.strategy)
        if posted:
            self.report(f"step {step}: {posted} questions posted for people")
        answers = queue.collect(store, step)
        if answers is None:
            raise WaitingForPeople(step, queue.open_count(store, step))
        # A "can't tell" moves the question to another pixel: judge each answer against its own pixel.
        by_pixel = {(a.instance_id, a.x, a.y): a.label for a in answers}
        asked = [c for c in choices if (c.instance_id, c.x, c.y) in by_pixel]
        diag = self.diagnostics(asked, [by_pixel[(c.instance_id, c.x, c.y)] for c in asked])
        queue.consume(store, step, phase=name, payload={"answered": len(answers), **diag})
        self.report(f"step {step}: {len(answers)} answers from people taken")

    # ------------------------------------------------------------------------------------ helpers
    def pool_iou(self, model: CondInst | Ensemble, store: Store, step: int) -> dict[str, float | None]:
        """Mean IoU of the masks apis would export for the pool against GT (simulation only), over the
        same objects as the yardsticks: the whole pool up to ``loop.yardstick_objects``, else that fixed
        sample (a refined export costs GrabCut's time per object); and, over the same objects, how well their
        trust scores sort them (Spearman's correlation with those IoUs, and the share of the worst tenth the least
        trusted tenth holds). Keys ``pool_iou``, ``trust_spearman``, ``trust_worst_tenth``; None outside
        simulation."""
        if not self.simulated:
            return {"pool_iou": None, "trust_spearman": None, "trust_worst_tenth": None}
        ids = self.pool_sample().instance_ids if self.cfg.loop.yardstick_objects > 0 else None
        trust, fit = self.colour_evidence(store, step)
        box_cuts = None
        if ids is not None and fit is not None:
            # The yardstick "GrabCut + points" is the refinement's start from the box: cut once, for both.
            box_cuts = {i: m.mask for i, m in self.grabcut_with_answers(store, step, ids).items()}
        exported = export_masks(model, self.train_set, store, self.device, self.cfg.loop.prediction_set,
                                max_step=step, batch_size=self.cfg.eval_batch_size,
                                refine=self.cfg.loop.refine_masks, trust_colours=trust, instance_ids=ids,
                                box_cuts=box_cuts, cut_fit=fit, progress=self._progress(f"export P{step}"))
        ious = pool_mask_ious(exported, self.train_set, ids)
        rho, caught = trust_rank_correlation(exported, ious), worst_caught(exported, ious)
        return {"pool_iou": round(float(np.mean(list(ious.values()))), 5),
                "trust_spearman": None if rho is None else round(rho, 5),
                "trust_worst_tenth": None if caught is None else round(caught, 5)}

    @property
    def simulated(self) -> bool:
        """GT masks answer the questions and every pool instance has one, so mask IoUs can be measured."""
        return self.gt_masks is not None and all(a.segmentation is not None for a in self.train_set.instances())

    def pool_sample(self) -> PoolSample:
        return pool_sample([a.id for a in self.train_set.instances()], self.cfg.loop.yardstick_objects)

    def yardsticks(self, store: Store, step: int) -> dict | None:
        """The no-model yardsticks of this step's pool (simulation only; see :mod:`apis.yardsticks`):
        method → {"mean", "se", "n"} over a fixed sample of ``loop.yardstick_objects`` objects."""
        if self.cfg.loop.yardstick_objects <= 0 or not self.simulated:
            return None
        sample = self.pool_sample()
        ids = sample.instance_ids
        grabcut = cached_grabcut_pseudo_masks(self.cache_dir, self.train_set, None, ids,
                                              self._progress("GrabCut yardstick"))
        with_points = self.grabcut_with_answers(store, step, ids)
        return {m: {"mean": round(e.mean, 5), "se": round(e.se, 5), "n": e.n}
                for m, e in pool_ious(self.train_set, sample, grabcut, with_points).items()}

    def grabcut_with_answers(self, store: Store, step: int, ids: Sequence[int]) -> dict[int, PseudoMask]:
        """GrabCut from the box seeded with the answers of steps ≤ ``step``, for the instances ``ids``
        (cached: the yardstick and the export's refinement share it)."""
        answered = {i: [(p.x, p.y, p.label) for p in ps] for i, ps in store.points(max_step=step).items()}
        return cached_grabcut_pseudo_masks(self.cache_dir, self.train_set, answered, ids,
                                           self._progress(f"GrabCut yardstick P{step}"))

    def build_model(self, member: int = 0, pairwise: float | None = None) -> CondInst:
        """A fresh model of the run's config (``pairwise``: BoxInst's pairwise weight instead of the config's)."""
        torch.manual_seed(self.seed + 1_000_003 * member)
        cfg = self.cfg.model if pairwise is None else dataclasses.replace(self.cfg.model, pairwise_weight=pairwise)
        return build_model(model_config_for(cfg, self.train_set))

    def data_seed(self, step: int, member: int = 0) -> int:
        # The same for every strategy of a seed: the paired design (docs/paper.md, "Experiments that can see the
        # effect"). Ensemble members differ from the main model in initialisation and data order, as models of
        # different seeds do.
        return self.seed * 1000 + step + 1_000_003 * member

    def limit(self, choices: list[Choice], step: int, model: CondInst | Ensemble,
              keep: set[int] | frozenset[int] = frozenset()) -> list[Choice]:
        """Keep ``points_per_step`` choices when a fixed budget is set (appendix C): instances drawn at
        random (seeded), or those M(s−1) detects best (lowest detection loss) for ``instance_choice``
        ``detection_loss``. The choices of the instances in ``keep`` (rejected by a reviewer: the review
        asked for their points) are kept beside the budget, which the other instances share."""
        n = self.cfg.loop.points_per_step
        rest = [i for i, c in enumerate(choices) if c.instance_id not in keep]
        if n <= 0 or n >= len(rest):
            return choices
        if self.cfg.loop.instance_choice == "detection_loss":
            scorer = model.members[0] if isinstance(model, Ensemble) else model
            scores = instance_scores(scorer, self.train_set, self.device, batch_size=self.cfg.eval_batch_size,
                                     instance_ids={choices[i].instance_id for i in rest},
                                     progress=self._progress(f"score P{step}"))
            ranked = sorted(rest, key=lambda i: (scores[choices[i].instance_id].detection_loss, choices[i].instance_id))
            picked = set(ranked[:n])
        else:
            g = torch.Generator().manual_seed(self.seed * 7919 + step)
            picked = {rest[j] for j in torch.randperm(len(rest), generator=g)[:n].tolist()}
        return [c for i, c in enumerate(choices) if i in picked or c.instance_id in keep]

    def diagnostics(self, choices: list[Choice], labels: list[int]) -> dict:
        judged = [(c.p_mean > 0.5) != bool(y) for c, y in zip(choices, labels, strict=True) if c.p_mean is not None]
        out: dict = {"misclassified": sum(judged) / len(judged) if judged else None}
        if self.gt_masks is not None and choices:
            d = [boundary_distance(self.gt_masks(c.instance_id), c.x, c.y) for c in choices]
            finite = [v for v in d if math.isfinite(v)]
            out["boundary_distance"] = sum(finite) / len(finite) if finite else None
        return out

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

    def _progress(self, label: str):
        if self.progress is None:
            return None
        return lambda done, total, *_: self.progress(label, done, total)


def mask_oracle(dataset: CocoDataset) -> tuple[MaskOracle, Callable[[int], object]]:
    oracle = MaskOracle(dataset)
    return oracle, oracle.mask

