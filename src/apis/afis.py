"""AFIS, active fully-supervised instance segmentation: the paper's baseline that spends the same
annotation seconds on polygon masks instead of point answers (docs/paper.md, "The paper's baselines and
variants").

Budget: APIS asks one point per pool instance per step, Q·``point_s`` seconds (Q pool instances), so
AFIS may have spent at most (s+1)·Q·``point_s`` seconds by step s; a mask costs ``mask_s``. What a
step cannot spend (a unit that does not fit) carries over. The initial model M0 is trained from masks
bought at random with the P0 budget; then each step scores the unbought units with M(s−1), buys from
the top, and fine-tunes M(s) from M(s−1) with every bought mask. Instances without a mask keep box
supervision only.

* ``level``: ``instance`` buys single masks; ``image`` buys all pool masks of an image at once (cost:
  its instance count × ``mask_s``; an image's score is the mean over its instances).
* ``measure``: ``entropy`` (highest mean entropy inside the box first), ``detection_quality`` (lowest
  GIoU loss of the best-matching detection first: the paper's best), ``detection_loss`` (highest
  detection loss first) or ``random``.

Phases in the run's store: ``afis`` (identity), ``buy_s`` (the instance ids bought at step s and
their seconds), ``train_s``, ``eval_s``; a killed run resumes at the phase it was in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from apis.config import RunConfig, dump_config
from apis.data.loader import TrainingSet
from apis.data.records import CocoDataset
from apis.layout import STORE_FILE, eval_phase, model_dir, train_phase
from apis.loop import RunMismatch, StepResult, metrics_line, val_metrics
from apis.models import build_model, model_config_for
from apis.names import afis_arm_name, parse_afis_arm
from apis.selection.instances import group_mean, instance_scores, spend
from apis.store import Store
from apis.train import load_model, pick_device, train


@dataclass
class AfisRun:
    """One AFIS arm (``level``, ``measure``) with one seed in ``root``; masks come from the train
    set's GT (simulation)."""

    root: Path
    cfg: RunConfig
    train_set: CocoDataset
    val_set: CocoDataset
    level: str
    measure: str
    seed: int
    report: Callable[[str], None] = print
    progress: Callable[[str, int, int], None] | None = None

    def __post_init__(self) -> None:
        parse_afis_arm(f"{self.level}/{self.measure}")
        if any(a.segmentation is None for a in self.train_set.instances()):
            raise ValueError("AFIS buys ground-truth masks: every pool instance of the train set needs a segmentation")
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.device = pick_device(self.cfg.device)
        if not (self.root / "config.yaml").exists():
            dump_config(self.cfg, self.root / "config.yaml")
        pool = [(im, a) for im in self.train_set.images for a in im.pool]
        self.image_of = {a.id: im.id for im, a in pool}
        self.instances_of: dict[int, list[int]] = {}
        for im, a in pool:
            self.instances_of.setdefault(im.id, []).append(a.id)

    @property
    def name(self) -> str:
        return afis_arm_name(self.level, self.measure)

    def budget(self, step: int) -> float:
        """Seconds AFIS may have spent by the end of ``step``: what APIS spends by then (P0 + s points)."""
        return (step + 1) * len(self.image_of) * self.cfg.cost.point_s

    # --------------------------------------------------------------------------------- the method
    def run(self, steps: int | None = None) -> list[StepResult]:
        steps = self.cfg.loop.steps if steps is None else steps
        with Store.open(self.root / STORE_FILE) as store:
            self.check_identity(store)
            self.buy(store, 0, None)
            model_path = self.train_step(store, 0, None)
            results = [self.evaluate_step(store, 0, model_path)]
            for s in range(1, steps + 1):
                self.buy(store, s, model_path)
                model_path = self.train_step(store, s, model_path)
                results.append(self.evaluate_step(store, s, model_path))
        return results

    # ------------------------------------------------------------------------------------- phases
    def check_identity(self, store: Store) -> None:
        me = {"level": self.level, "measure": self.measure, "seed": self.seed}
        arm = store.phase("afis")
        if arm is None:
            store.mark_phase("afis", me)
        elif arm != me:
            raise RunMismatch(f"{self.root}: this folder holds the AFIS run {arm}, not {me}; use a new folder")

    def bought(self, store: Store, max_step: int) -> list[int]:
        out: list[int] = []
        for s in range(max_step + 1):
            done = store.phase(f"buy_{s}")
            if done is not None:
                out.extend(done["instances"])
        return out

    def spent(self, store: Store, max_step: int) -> float:
        return sum((store.phase(f"buy_{s}") or {}).get("seconds", 0.0) for s in range(max_step + 1))

    def buy(self, store: Store, step: int, model_path: Path | None) -> None:
        """Score the unbought units with M(step−1) (at random at step 0) and buy from the top within the
        budget left; the bought instance ids and their cost commit as one phase record."""
        name = f"buy_{step}"
        if store.phase(name) is not None:
            return
        owned = set(self.bought(store, step - 1))
        mask_s = self.cfg.cost.mask_s
        if self.level == "instance":
            costs = {i: mask_s for i in self.image_of if i not in owned}
        else:
            costs = {im: mask_s * len(ids) for im, ids in self.instances_of.items() if not owned & set(ids)}
        order = self.rank(list(costs), step, model_path)
        left = self.budget(step) - self.spent(store, step - 1)
        units = spend(order, costs, left)
        ids = units if self.level == "instance" else [i for im in units for i in self.instances_of[im]]
        seconds = sum(costs[u] for u in units)
        store.mark_phase(name, {"instances": sorted(ids), "seconds": seconds, "units": len(units)})
        self.report(f"step {step}: AFIS bought {len(ids)} masks ({len(units)} {self.level}s, {seconds:.1f} s; "
                    f"{left - seconds:.1f} s carried over)")

    def rank(self, units: list[int], step: int, model_path: Path | None) -> list[int]:
        """Units in buying order. Random (and the initial set) use a generator seeded by (seed, step)."""
        if step == 0 or self.measure == "random" or not units:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            return [units[i] for i in torch.randperm(len(units), generator=g).tolist()]
        model = load_model(model_path, self.device)
        wanted = set(units) if self.level == "instance" else {i for u in units for i in self.instances_of[u]}
        scores = instance_scores(model, self.train_set, self.device, batch_size=self.cfg.eval_batch_size,
                                 entropy=self.measure == "entropy", instance_ids=wanted,
                                 progress=self._progress(f"score P{step}"))
        key = {"entropy": lambda s: s.box_entropy, "detection_quality": lambda s: s.giou_loss,
               "detection_loss": lambda s: s.detection_loss}[self.measure]
        per_instance = {i: key(s) for i, s in scores.items()}
        if self.level == "instance":
            value = per_instance
        else:
            ids = [i for u in units for i in self.instances_of[u]]
            value = group_mean([per_instance[i] for i in ids], [self.image_of[i] for i in ids])
        # Entropy and detection loss buy the hardest first; detection quality the best detected first.
        sign = 1.0 if self.measure == "detection_quality" else -1.0
        return sorted(units, key=lambda u: (sign * value[u], u))

    def train_step(self, store: Store, step: int, init: Path | None) -> Path:
        name = train_phase(step)
        done = store.phase(name)
        if done is not None:
            return self.root / done["model"]
        schedule = self.cfg.initial if step == 0 else self.cfg.finetune
        masks = set(self.bought(store, step))
        torch.manual_seed(self.seed)
        model = build_model(model_config_for(self.cfg.model, self.train_set))
        self.report(f"step {step}: training {'M0' if step == 0 else f'M{step} from M{step - 1}'} with "
                    f"{len(masks)} masks ({schedule.iterations} iterations)")
        # The data order of APIS's runs with the same seed: the comparison is paired.
        out = model_dir(self.root, step)
        result = train(model, TrainingSet(self.train_set, mask_ids=masks), schedule, out, seed=self.seed * 1000 + step,
                       device=self.device, init=init, progress=self._progress(f"train M{step}"))
        rel = os.path.relpath(result.final.resolve(), self.root.resolve())
        store.mark_phase(name, {"model": rel, "seconds": round(result.seconds, 2)})
        return result.final

    def evaluate_step(self, store: Store, step: int, model_path: Path) -> StepResult:
        name = eval_phase(step)
        done = store.phase(name)
        if done is None:
            model = load_model(model_path, self.device)
            done = val_metrics(model, self.val_set, self.device, model_dir(self.root, step),
                               self.cfg.eval_batch_size, self._progress(f"evaluate M{step}"))
            store.mark_phase(name, done)
            self.report(metrics_line(step, done))
        bought = store.phase(f"buy_{step}") or {}
        return StepResult(step=step, points_per_instance=0.0,
                          annotation_hours=round(self.spent(store, step) / 3600, 4),
                          segm=done["segm"], bbox=done["bbox"], chosen=len(bought.get("instances", [])))

    def _progress(self, label: str):
        if self.progress is None:
            return None
        return lambda done, total, *_: self.progress(label, done, total)
