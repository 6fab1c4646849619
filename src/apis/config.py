"""Run configuration: typed dataclasses, YAML in and out, and the ``tiny`` and ``coco`` presets.

A YAML file names a preset and overrides any field, e.g.::

    preset: tiny
    data: {train: data/train/annotations.json, val: data/val/annotations.json}
    loop: {strategies: [random, entropy], steps: 3, seeds: [0, 1, 2]}
    model: {backbone: {name: resnet18, pretrained: false}}

Unknown keys are errors that name the key and the file, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from apis.atomic import write_text_atomic
from apis.cost import CostModel
from apis.models.backbone import BackboneConfig
from apis.models.condinst import ARCHITECTURES, CondInstConfig
from apis.names import (
    POINT_STRATEGIES,
    PREDICTION_SETS,
    PSEUDO_MASK_SOURCES,
    REFINEMENTS,
    parse_afis_arm,
    uses_ensemble,
)
from apis.train import Schedule


class ConfigError(ValueError):
    pass


@dataclass
class DataConfig:
    """COCO json paths (images relative to each json's folder). Empty = the built-in synthetic set."""

    train: str = ""  # the pool: a COCO json with boxes (and, in simulation, the masks that answer)
    val: str = ""  # evaluated after every training phase; needs masks; never asked about
    synthetic_seed: int = 0  # the built-in set (data.train empty): same seed, same files
    synthetic_train_images: int = 240  # images of its pool (train/)
    synthetic_val_images: int = 120  # images of its val/
    synthetic_image_size: int = 160  # side of its square images, pixels


@dataclass
class ReviewConfig:
    """The simulated reviewer (experiments only; people review with ``apis serve``): after M(s) is trained
    and evaluated, the ``per_step`` least trusted objects of its pool export (lowest ``apis_score``, not yet
    accepted) are judged against their GT masks: accepted when the exported mask's IoU is ≥ ``accept_iou``,
    else rejected. 0 turns it off."""

    per_step: int = 0  # objects judged after each step; 0: no simulated review
    accept_iou: float = 0.75  # IoU with the GT mask at which the simulated reviewer accepts


@dataclass
class LoopConfig:
    """The active loop. ``points_per_step`` = 0 asks one point per instance per step (the paper)."""

    # Point strategies `apis compare` runs (apis.names.POINT_STRATEGIES; `apis run` takes one, --strategy).
    strategies: list[str] = field(default_factory=lambda: ["random", "entropy"])
    steps: int = 3  # active steps after P0: step s selects, answers and fine-tunes M(s)
    seeds: list[int] = field(default_factory=lambda: [0])  # `apis compare`: one shared P0 and M0 per seed
    # A: multiple anchors; S: A at three test scales, with and without flip; M: A of ``ensemble_size``
    # models trained with different seeds (each step trains every member: ensemble_size × the training
    # time); S+M: S of each member.
    prediction_set: str = "A"
    points_per_step: int = 0  # > 0: exactly this many points a step, in the instances instance_choice picks
    # With points_per_step > 0 (appendix C): which instances get a point, "random" or "detection_loss"
    # (lowest detection loss of M(s−1) first); the strategy then picks the pixel inside each.
    instance_choice: str = "random"
    ensemble_size: int = 3  # models of prediction sets M and S+M
    # Points per instance in P0; 0 starts from boxes alone (M0 learns masks from the pseudo masks and BoxInst's
    # terms: model.box_projection_weight, box_start_pairwise below), so step s holds s points per instance.
    initial_points: int = 1
    # A box-only start (initial_points 0) whose M0 learns from a shape (`auto` picks the ellipse where GrabCut's
    # masks fail the box check) trains M0 without and with BoxInst's colour-pairwise loss at this weight, its one
    # colour cue, and keeps the term (for every phase) only where M0's masks agree better with GrabCut's masks that
    # pass the box check with it than without it (apis.box_start). Penn-Fudan's pedestrians: kept, M0 mask AP
    # 18.1 → 37.1 (three seeds, ramped in: initial.pairwise_warmup); DSB's nuclei: left out, the term costs
    # 1.8–10.6 AP there (README). Where under 30 of GrabCut's masks pass, nothing can judge the term and M0 learns
    # with it untried: GrabCut fails there as on Penn-Fudan, where the term won every trial (docs/evidence.md,
    # "Where nothing can judge the term"); nothing judges the ellipse there either, so `auto` does not teach it and
    # the boxes teach the masks through BoxInst's two terms alone (apis.box_start.box_teaches_masks). 0: never tried;
    # model.pairwise_weight applies in every phase of every run.
    box_start_pairwise: float = 0.0
    # The same trial, and the same judge, for M0 of a P0 start (initial_points > 0) whose pseudo masks are a shape:
    # the one answered point per object does not carry the outline either. Penn-Fudan's pedestrians: kept, M0 mask
    # AP 30.0 → 39.9 and pool IoU 0.703 → 0.756 (seed 0; kept on seeds 1 and 2 too); DSB's nuclei: kept, pool IoU
    # 0.840 → 0.850, mask AP 39.4 → 38.6 (docs/evidence.md); where nothing can judge it, learnt with it as above
    # (Penn-Fudan's images where GrabCut fails: M0 26.9 → 35.6). 0: never tried.
    p0_pairwise: float = 0.0
    # AFIS arms run by `apis compare` beside the strategies, as LEVEL/MEASURE: instance or image /
    # entropy, detection_quality, detection_loss or random (see apis.afis).
    afis: list[str] = field(default_factory=list)
    # Simulation only: the no-model yardsticks (box, ellipse, GrabCut, GrabCut with the answered points;
    # apis.yardsticks) are measured on every pool object up to this many, else on a fixed random sample
    # of this many (GrabCut costs about 60 ms an object). 0 leaves them out.
    yardstick_objects: int = 300
    # Where the pseudo masks come from when model.pseudo_mask_weight > 0: "auto" (the tiny preset's), per dataset
    # the no-model source the answers judge best and per object the next one where it fails the checks, each
    # mask weighed by its source's agreement with the answers (without answers, a shape by its agreement with
    # GrabCut where GrabCut passes the box check; apis.pseudo_masks.auto_pseudo_masks,
    # apis.mask_checks.source_weight); "grabcut", GrabCut from each box
    # (cut once per pool, the cheap one), or "grabcut_points", GrabCut seeded with the points answered so
    # far (cut again for every training phase: about 60 ms an object per core each time), or "refined": from
    # step 1 on, the masks M(s−1) exports with the answers of steps ≤ s and refine_masks (self-training; an
    # export of the whole pool per training phase), "auto"'s masks for M0.
    pseudo_masks: str = "grabcut"
    # How the pool's masks are exported (the per-step pool IoU and `apis export masks`): "none", the
    # model's map thresholded, or "grabcut", GrabCut started from it with the answered points (apis.export), or
    # "auto" (the tiny preset's): GrabCut where the answers trust the colours, else the map; every mask checked.
    refine_masks: str = "none"
    # Review decisions (people's, or the simulated reviewer's): an accepted mask is final (exported unchanged,
    # never asked about again); a rejected object gets this many extra points, the strategy's next-best
    # pixels, beside its usual one at the first selection after the decision.
    review_points: int = 2
    review: ReviewConfig = field(default_factory=ReviewConfig)


@dataclass
class RunConfig:
    preset: str = "tiny"  # tiny (CPU) or coco (the paper's GPU schedules): the values every other key starts from
    data: DataConfig = field(default_factory=DataConfig)
    model: CondInstConfig = field(default_factory=lambda: CondInstConfig(num_classes=0))
    initial: Schedule = field(default_factory=Schedule)  # trains M0 from P0
    finetune: Schedule = field(default_factory=Schedule)  # trains M(s) from M(s-1)
    loop: LoopConfig = field(default_factory=LoopConfig)
    cost: CostModel = field(default_factory=CostModel)
    device: str = "auto"  # auto (cuda when present, else cpu), cpu, cuda or cuda:N
    eval_batch_size: int = 8  # images a batch when evaluating, selecting and exporting


def preset(name: str) -> RunConfig:
    if name == "tiny":
        return RunConfig(
            preset="tiny",
            model=CondInstConfig(
                num_classes=0,
                backbone=BackboneConfig("efficientnet_lite0", pretrained=True),
                fpn_channels=64, head_convs=2, mask_branch_channels=64, mask_branch_convs=2,
                train_min_sizes=(128, 144, 160, 176, 192), test_min_size=160, max_size=320,
                # Test objects under 16 px across (nuclei) at up to twice the size: inference only
                # (apis.data.sizes; DSB 2018's M0 val mask AP 32.1 → 38.3 at 320).
                max_test_upscale=2.0,
                # Beside the points, learn from GrabCut's masks of the boxes (apis.pseudo_masks): M0's
                # mask AP on the built-in set rises from 0.7 to 5.3 (benchmarks/mask_recipe.py; README).
                point_loss_weight=1.0, pseudo_mask_weight=1.0,
                # BoxInst's projection term: a tight box's object reaches every row and column of it, whatever
                # its colours. Beside the pseudo masks M0's mask AP rises on all three development sets: built-in
                # 8.09 → 8.27, DSB 2018 32.12 → 33.14, Penn-Fudan 17.27 → 25.54, where the ellipses cut off the
                # arms and legs (benchmarks/mask_recipe.py, README "Masks that prove themselves"). The
                # colour-pairwise term only as a box-only start's judged trial (loop.box_start_pairwise): with it the
                # built-in set's textured masks and DSB's small nuclei collapse.
                box_projection_weight=1.0,
            ),
            # `make demo` (M0 + 3 steps × 2 strategies) took 15–33 minutes on 2 CPU cores, with the host's load.
            # The point loss at 0.1 for M0 (the paper's weight; beside GrabCut's masks M0's mask AP rose
            # from 5.2 to 7.8, benchmarks/mask_recipe.py), at 1.0 for fine-tuning, where answers accumulate.
            # BoxInst's pairwise term, where a box-only start tries it (loop.box_start_pairwise), ramps in over M0's
            # first quarter: at full weight at once it left Penn-Fudan's box-only M0 with one label everywhere.
            initial=Schedule(iterations=600, batch_size=8, lr=0.01, warmup_iters=50, decay_at=(450,),
                             checkpoint_every=100, log_every=20, point_loss_weight=0.1, pairwise_warmup=150),
            finetune=Schedule(iterations=150, batch_size=8, lr=0.005, warmup_iters=20, decay_at=(100,),
                              checkpoint_every=50, log_every=10, point_loss_weight=1.0),
            # Learn from, and export, what the answers say is right for this dataset (apis.mask_checks): GrabCut
            # from the box and its refinement of the model's map where GrabCut agrees best with the answers (the
            # built-in set: pool IoU 0.48 → 0.71 at P0), else the ellipse / the model's map (real nuclei, where
            # GrabCut's masks of the boxes were empty); per object the next candidate where one fails the checks.
            # M0 tries to learn the colours from BoxInst's pairwise term where GrabCut cannot give them, from a P0
            # start as from the boxes alone, and keeps it only where the judge says it helps (apis.box_start).
            loop=LoopConfig(pseudo_masks="auto", refine_masks="auto", box_start_pairwise=1.0, p0_pairwise=1.0),
        )
    if name == "coco":
        # The paper's CondInst R-50 schedules (batch 16): M0 90k, LR 0.01, ×0.1 at 60k and 80k;
        # each step fine-tunes 30k, ×0.1 every 10k; point-loss weight 0.1 for M0, 1.0 for fine-tuning.
        return RunConfig(
            preset="coco",
            model=CondInstConfig(
                num_classes=0,
                backbone=BackboneConfig("resnet50", pretrained=True, freeze_at=2),
                fpn_channels=256, extra_levels=2, head_convs=4, mask_branch_channels=128, mask_branch_convs=4,
                train_min_sizes=(640, 672, 704, 736, 768, 800), test_min_size=800, max_size=1333,
                point_loss_weight=0.1,
            ),
            initial=Schedule(iterations=90_000, batch_size=16, lr=0.01, warmup_iters=1000, decay_at=(60_000, 80_000),
                             checkpoint_every=5000, log_every=20, point_loss_weight=0.1),
            finetune=Schedule(iterations=30_000, batch_size=16, lr=0.01, warmup_iters=1000,
                              decay_at=(10_000, 20_000), checkpoint_every=5000, log_every=20, point_loss_weight=1.0),
            eval_batch_size=4,
        )
    raise ConfigError(f"unknown preset {name!r}; choose 'tiny' or 'coco'")


def _merge(obj: Any, overrides: dict, where: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``overrides`` applied recursively, checking keys and types."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(overrides).__name__}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, f"{where}.{key}")
        else:
            changes[key] = _coerce(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(obj, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value]
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def load_config(path: Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Preset named in the file (default ``tiny``) with the file's and then ``overrides``' values."""
    raw: dict = {}
    where = "overrides"
    if path is not None:
        where = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    # A preset given on the command line wins over the file's.
    cfg = preset((overrides or {}).get("preset") or raw.get("preset", "tiny"))
    cfg = _merge(cfg, {k: v for k, v in raw.items() if k != "preset"}, where)
    if overrides:
        cfg = _merge(cfg, {k: v for k, v in overrides.items() if k != "preset"}, "overrides")
    check_config(cfg, where)
    return cfg


def check_config(cfg: RunConfig, where: str) -> None:
    """Refuse settings that would only fail after hours of training."""
    for s in cfg.loop.strategies:
        if s not in POINT_STRATEGIES:
            raise ConfigError(f"{where}: loop.strategies: unknown strategy {s!r}; "
                              f"choose from {', '.join(POINT_STRATEGIES)}")
    if cfg.loop.prediction_set not in PREDICTION_SETS:
        raise ConfigError(f"{where}: loop.prediction_set {cfg.loop.prediction_set!r} is not built; "
                          f"choose one of {', '.join(PREDICTION_SETS)}")
    if cfg.model.architecture not in ARCHITECTURES:
        raise ConfigError(f"{where}: model.architecture {cfg.model.architecture!r} is not built; "
                          f"choose one of {', '.join(ARCHITECTURES)}")
    if uses_ensemble(cfg.loop.prediction_set) and cfg.loop.ensemble_size < 2:
        raise ConfigError(f"{where}: loop.prediction_set {cfg.loop.prediction_set!r} needs loop.ensemble_size ≥ 2 "
                          f"models, got {cfg.loop.ensemble_size}")
    if cfg.loop.instance_choice not in ("random", "detection_loss"):
        raise ConfigError(f"{where}: loop.instance_choice {cfg.loop.instance_choice!r}: "
                          "choose random or detection_loss")
    if cfg.loop.initial_points < 0:
        raise ConfigError(f"{where}: loop.initial_points must be ≥ 0 (0: start from boxes alone)")
    if cfg.loop.box_start_pairwise < 0:
        raise ConfigError(f"{where}: loop.box_start_pairwise must be ≥ 0 (0: no pairwise term in a box-only start)")
    if cfg.loop.p0_pairwise < 0:
        raise ConfigError(f"{where}: loop.p0_pairwise must be ≥ 0 (0: no pairwise trial in a P0 start)")
    if cfg.loop.initial_points == 0 and cfg.model.box_projection_weight <= 0 and cfg.model.pseudo_mask_weight <= 0:
        raise ConfigError(f"{where}: loop.initial_points 0 trains M0 from boxes alone, which teaches no masks "
                          "unless model.pseudo_mask_weight > 0 (GrabCut masks of the boxes, the tiny preset's) or "
                          "model.box_projection_weight > 0 (and model.pairwise_weight, as BoxInst); set one")
    for spec in cfg.loop.afis:
        try:
            parse_afis_arm(spec)
        except ValueError as e:
            raise ConfigError(f"{where}: loop.afis: {e}") from None
    if cfg.loop.pseudo_masks not in PSEUDO_MASK_SOURCES:
        raise ConfigError(f"{where}: loop.pseudo_masks {cfg.loop.pseudo_masks!r}: choose "
                          f"{' or '.join(PSEUDO_MASK_SOURCES)}")
    if cfg.loop.refine_masks not in REFINEMENTS:
        raise ConfigError(f"{where}: loop.refine_masks {cfg.loop.refine_masks!r}: choose {' or '.join(REFINEMENTS)}")
    if cfg.loop.yardstick_objects < 0:
        raise ConfigError(f"{where}: loop.yardstick_objects must be ≥ 0 (0 leaves the yardsticks out)")
    if cfg.loop.review_points < 0:
        raise ConfigError(f"{where}: loop.review_points must be ≥ 0 (extra points for a rejected object; 0: none)")
    if cfg.loop.review.per_step < 0:
        raise ConfigError(f"{where}: loop.review.per_step must be ≥ 0 (objects the simulated reviewer judges "
                          "each step; 0: off)")
    if not 0.0 < cfg.loop.review.accept_iou <= 1.0:
        raise ConfigError(f"{where}: loop.review.accept_iou must be in (0, 1] (the IoU with the GT mask at which "
                          f"the simulated reviewer accepts a mask), got {cfg.loop.review.accept_iou}")
    if cfg.loop.steps < 0 or not cfg.loop.seeds:
        raise ConfigError(f"{where}: loop.steps must be ≥ 0 and loop.seeds non-empty")


#: What `apis demo` (and so `make demo`) runs, as configs/demo.yaml writes it out: the tiny preset with M0 at
#: 400 iterations instead of 600, 60 fine-tuning iterations a step instead of 150 and the yardsticks on 200
#: objects instead of 300, so that the demo, install included, ends within 15 minutes on 2 CPU cores (training
#: is about 0.6–0.7 s an iteration there; README, "Two commands").
DEMO_OVERRIDES = {"preset": "tiny", "initial": {"iterations": 400, "decay_at": [300]},
                  "finetune": {"iterations": 60, "decay_at": [42]},
                  "loop": {"strategies": ["random", "entropy"], "steps": 3, "seeds": [0], "yardstick_objects": 200}}


def dump_config(cfg: RunConfig, path: Path) -> None:
    write_text_atomic(yaml.safe_dump(_plain(asdict(cfg)), sort_keys=False), path)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x
