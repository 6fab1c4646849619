"""The active loop: P0 → M0 → (review → select → answer → fine-tune → evaluate)*.

This is the only module that knows the order of the phases. :class:`ActiveRun` keeps the sequence and receives
its parts, each in its own module below it:

* who answers (:mod:`apis.answerers`): the oracle at once, or people through the store's queue;
* what each model learns from beside its points (:mod:`apis.mask_policy`): the mask sources, the colour evidence,
  the refined pseudo masks, M0's judged pairwise term;
* what each step measures (:mod:`apis.step_measures`): AP, pool IoU, trust, yardsticks, diagnostics;
* the simulated reviewer (:mod:`apis.simulated_review`), in simulation with ``loop.review.per_step`` > 0.

Every phase reads its inputs from the run directory (store + checkpoints) and records its completion in the store
(``phases`` table), so a run killed at any moment and started again resumes at the phase it was in:

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
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from apis.answerers import Answerer, OracleAnswerer, PeopleAnswerer, WaitingForBoxes, WaitingForPeople
from apis.box_start import settle
from apis.config import RunConfig, dump_config
from apis.data.loader import TrainingSet
from apis.data.records import CocoDataset
from apis.data.sizes import MIN_OBJECT_PIXELS, box_objects, median_side_at
from apis.layout import (
    STORE_FILE,
    answer_phase,
    eval_phase,
    model_dir,
    recorded_model,
    review_phase,
    select_phase,
    train_phase,
)
from apis.mask_policy import MaskPolicy
from apis.models import build_model, model_config_for
from apis.models.condinst import CondInst
from apis.models.ensemble import Ensemble
from apis.names import uses_ensemble
from apis.oracle import MaskOracle, Oracle
from apis.selection.points import get_strategy
from apis.selection.select import Choice, select_points
from apis.simulated_review import SimulatedReview, refuse_review, review_line
from apis.step_measures import StepMeasures, StepResult, metrics_line, val_metrics
from apis.step_plan import detection_losses, limit_choices, review_plan
from apis.store import Store
from apis.train import Schedule, TrainResult, load_model, pick_device, train

# Moved to the parts' modules; kept importable from here for the CLI, the experiments and the tests.
__all__ = ["ActiveRun", "Report", "RunMismatch", "StepResult", "WaitingForBoxes", "WaitingForPeople", "mask_oracle",
           "metrics_line", "val_metrics"]

Report = Callable[[str], None]


class RunMismatch(ValueError):
    """A run directory was resumed with another strategy or seed than it was started with."""


@dataclass
class ActiveRun:
    """One strategy with one seed in ``root``. Its parts: ``answerer`` (who answers; built as an
    :class:`~apis.answerers.OracleAnswerer` of ``oracle``, a :class:`~apis.oracle.MaskOracle` in simulation, or
    with ``people`` a :class:`~apis.answerers.PeopleAnswerer`), ``masks`` (what each model learns from,
    :class:`~apis.mask_policy.MaskPolicy`), ``measures`` (what each step measures,
    :class:`~apis.step_measures.StepMeasures`) and ``reviewer`` (:class:`~apis.simulated_review.SimulatedReview`,
    built where ``loop.review.per_step`` > 0); a part left None is built from the config. ``gt_masks``
    (instance id → H×W GT mask) serves the oracle-aware strategies and the simulation's measures."""

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
    answerer: Answerer | None = None
    masks: MaskPolicy | None = None
    measures: StepMeasures | None = None
    reviewer: SimulatedReview | None = None
    # One selection pass over the pool; apis.distributed.DistributedRun swaps in its sharded pass.
    choose_points = staticmethod(select_points)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else self.root / "cache"
        self.device = pick_device(self.cfg.device)
        get_strategy(self.strategy)  # an unknown name fails now, not after M0 has trained
        if self.answerer is None:
            self.answerer = (PeopleAnswerer(self.strategy, self.report) if self.people
                             else OracleAnswerer(self.oracle, self.strategy, self.report, self._progress))
        self.people = self.answerer.people
        refuse_review(self.cfg.loop.review.per_step, self.people, self.gt_masks)
        if self.masks is None:
            self.masks = MaskPolicy(self.root, self.cache_dir, self.train_set, self.cfg, self.device, self.report,
                                    self._progress)
        if self.measures is None:
            self.measures = StepMeasures(self.cfg, self.train_set, self.val_set, self.cache_dir,
                                         self.masks.colour_evidence, self.gt_masks, self.device, self._progress)
        if self.reviewer is None and self.cfg.loop.review.per_step > 0:
            self.reviewer = SimulatedReview(self.cfg, self.train_set, self.gt_masks, self.masks.colour_evidence,
                                            self.device, self._progress)
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
        """``p0``: the pool's instances into the store and P0 answered (``loop.initial_points`` per instance)."""
        if store.phase("p0") is not None:
            return
        if store.box_project() is not None and store.box_pool() is None:
            raise WaitingForBoxes(store.box_progress())  # the train json has no boxes until people have drawn them
        store.add_instances(self.train_set, "train")
        self.answerer.initial_points(store, self.train_set, self.seed, self.cfg.loop.initial_points)

    def train_step(self, store: Store, step: int, init: Path | None) -> Path:
        """Train M(step) (from ``init`` = M(step−1), or ImageNet weights at step 0) and, for prediction
        set M, the other ensemble members, each from its own previous member. Returns M(step)'s path."""
        path = self.train_member(store, step, 0, init)
        for j in range(1, self.ensemble_size):
            self.train_member(store, step, j, self.member_path(store, step - 1, j) if step > 0 else None)
        return path

    def train_member(self, store: Store, step: int, member: int, init: Path | None) -> Path:
        """``train_{step}`` (``_m{member}``): the member learns from the answers of steps ≤ step and what the
        mask policy gives it; M0 may try BoxInst's pairwise term (the policy judges it)."""
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
        targets = self.masks.targets(store, step, member, points, lambda: self.member_path(store, step - 1, 0))
        data = TrainingSet(self.train_set, points=points, pseudo_masks=targets.pseudo)
        trial = self.masks.pairwise_trial(step, member, targets.learnt_from)
        if trial is not None:
            result = self.masks.train_m0_judged(store, out, trial, targets.learnt_from,
                                                partial(self.fit, data, schedule), self.settle_m0)
        else:
            _, result = self.fit(data, schedule, self.masks.pairwise_weight(store), out, f"train {label}", True,
                                 step, member, init)
        # Relative to the run folder, so a moved or copied run (or a compare arm) still finds its models.
        model = os.path.relpath(result.final.resolve(), self.root.resolve())
        store.mark_phase(name, {"model": model, "seconds": round(result.seconds, 2)})
        return result.final

    def fit(self, data: TrainingSet, schedule: Schedule, pairwise: float, folder: Path, label: str,
            say_size: bool = True, step: int = 0, member: int = 0, init: Path | None = None
            ) -> tuple[CondInst, TrainResult]:
        """A fresh model of member ``member`` with BoxInst's pairwise weight ``pairwise``, trained on ``data``
        into ``folder`` (resumed from its checkpoints there) from ``init`` (None: ImageNet weights)."""
        model = self.build_model(member, pairwise)
        if say_size:
            self.report_test_size(step, member, model)
        return model, train(model, data, schedule, folder, seed=self.data_seed(step, member), device=self.device,
                            init=init, progress=self._progress(label))

    def evaluate_step(self, store: Store, step: int, model_path: Path) -> StepResult:
        name = eval_phase(step)
        done = store.phase(name)
        if done is None:
            model = load_model(model_path, self.device)
            done = self.measures.measure(store, step, model, model_dir(self.root, step),
                                         lambda: self.selection_model(store, step, model))
            store.mark_phase(name, done)
            self.report(metrics_line(step, done))
        return self.measures.step_result(store, step, done)

    def review(self, store: Store, step: int, model_path: Path) -> None:
        """``review_{step}``: the simulated reviewer judges masks of M(step)'s pool export. Off without a
        reviewer, and skipped once ``select_{step+1}`` is recorded (a run resumed with review turned on does not
        review after the fact)."""
        name = review_phase(step)
        if self.reviewer is None or store.phase(name) is not None or store.phase(select_phase(step + 1)) is not None:
            return
        model = self.selection_model(store, step, load_model(model_path, self.device))
        payload = self.reviewer.review(store, step, model)
        store.mark_phase(name, payload)
        self.report(review_line(step, payload))

    def select(self, store: Store, step: int, model_path: Path) -> list[Choice]:
        """``select_{step}``: the strategy's pixels from M(step−1), shaped by the review decisions and the point
        budget (:mod:`apis.step_plan`), recorded before any is asked."""
        name = select_phase(step)
        done = store.phase(name)
        if done is None:
            accepted, rejects = review_plan(store, step)
            model = self.selection_model(store, step - 1, load_model(model_path, self.device))
            labelled = {i: [(p.x, p.y) for p in ps] for i, ps in store.points().items()}
            asked = {a.id for a in self.train_set.instances()} - accepted if accepted else None
            extra = {i: self.cfg.loop.review_points for i in rejects} if self.cfg.loop.review_points else None
            choices = self.choose_points(model, self.train_set, labelled, self.strategy, step, self.seed,
                                         self.device, batch_size=self.cfg.eval_batch_size,
                                         prediction_set=self.cfg.loop.prediction_set, gt_masks=self.gt_masks,
                                         progress=self._progress(f"select P{step}"),
                                         alternates=self.answerer.reserve, instance_ids=asked, extra=extra)
            losses = detection_losses(model, self.train_set, self.device, self.cfg.eval_batch_size,
                                      self._progress(f"score P{step}"))
            choices = limit_choices(choices, self.cfg.loop.points_per_step, self.cfg.loop.instance_choice, self.seed,
                                    step, keep=set(rejects), losses=losses)
            done = {"choices": [dataclasses.asdict(c) for c in choices]}
            if accepted or rejects:
                done["review"] = {"accepted": sorted(accepted), "rejected": sorted(rejects),
                                  "rejects_used": sorted(rejects.values()),
                                  "review_points": self.cfg.loop.review_points}
            store.mark_phase(name, done)
        return [Choice(**{**c, "alternates": [tuple(p) for p in c.get("alternates", [])]}) for c in done["choices"]]

    def answer(self, store: Store, step: int, choices: list[Choice]) -> None:
        """``answer_{step}``: the answerer's answers to ``choices``, with the measures' diagnostics."""
        if store.phase(answer_phase(step)) is None:
            self.answerer.answer(store, step, choices, self.measures.describe)

    # ------------------------------------------------------------------------------------ models
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

    def report_test_size(self, step: int, member: int, model: CondInst) -> None:
        if step == 0 and member == 0 and model.cfg.test_min_size != self.cfg.model.test_min_size:
            given = self.cfg.model
            median = median_side_at(box_objects(self.train_set), given.test_min_size, given.max_size)
            self.report(f"step 0: the median box is {median:.1f} px across at test size {given.test_min_size}, "
                        f"under {MIN_OBJECT_PIXELS:g}: evaluating, selecting and exporting at {model.cfg.test_min_size}"
                        f" (model.max_test_upscale {given.max_test_upscale:g}; training sizes unchanged)")

    def settle_m0(self, out: Path, kept: bool) -> None:
        """Put the judged M0 in ``out`` (:func:`apis.box_start.settle`; on one rank of a DDP
        run)."""
        settle(out, kept)

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

    def _progress(self, label: str):
        if self.progress is None:
            return None
        return lambda done, total, *_: self.progress(label, done, total)


def mask_oracle(dataset: CocoDataset) -> tuple[MaskOracle, Callable[[int], object]]:
    oracle = MaskOracle(dataset)
    return oracle, oracle.mask
