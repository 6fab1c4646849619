"""Optimisation: SGD with warm-up and step decay, checkpoints, exact resume, CSV log, progress.

A run lives in one directory: ``checkpoint.pt`` (latest state, rewritten atomically every
``checkpoint_every`` iterations), ``log.csv`` (one row per logged iteration: learning rate, losses, and
the model's accuracy on the labelled points of each group since the previous row, ``point_acc_random``
for P0's random points and ``point_acc_acquired`` for the points chosen at steps ≥ 1, empty when the
group had none; see :class:`~apis.models.condinst.CondInst`) and ``model_final.pt``
(written last; its presence means the run finished). Batches and random augmentation are pure
functions of (seed, iteration), so a run killed at any moment and started again ends with the same
weights as one that was never interrupted.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from apis.data.loader import IterationSampler, TrainingSet
from apis.models import build_model
from apis.models.backbone import BackboneConfig
from apis.models.condinst import POINT_GROUPS, STAT_PREFIX, CondInst, CondInstConfig, RCNNConfig


@dataclass
class Schedule:
    """Iterations are optimizer steps of ``batch_size`` images. ``decay_at`` multiplies the LR by
    ``gamma`` at each listed iteration; the first ``warmup_iters`` ramp linearly from
    ``warmup_factor · lr``."""

    iterations: int = 300  # optimizer steps
    batch_size: int = 8  # images a step, over all processes under torchrun (a multiple of their number)
    optimizer: str = "sgd"  # or "adamw"
    lr: float = 0.01  # base learning rate
    momentum: float = 0.9  # SGD's
    weight_decay: float = 1e-4  # L2 penalty on the weights (decoupled for adamw)
    warmup_iters: int = 50  # the LR ramps linearly from warmup_factor × lr over these first iterations
    warmup_factor: float = 0.001  # the warm-up's first LR, as a share of lr
    decay_at: tuple[int, ...] = ()  # iterations at which the LR is multiplied by gamma
    gamma: float = 0.1  # LR factor at each decay_at
    clip_grad: float | None = 10.0  # cap on the gradients' total norm; null: no clipping
    checkpoint_every: int = 50  # iterations between checkpoints, where a killed run resumes exactly
    log_every: int = 10  # iterations between rows of log.csv
    point_loss_weight: float | None = None  # overrides the model's weight for this schedule
    # BoxInst's colour-pairwise loss ramps linearly from 0 over this many iterations (BoxInst: 10,000 of 90,000), so
    # the masks take a shape from the other terms before the colours smooth them: at full weight from the first
    # iteration it drives a fresh mask head to one label everywhere, where the masks' losses stop teaching
    # (Penn-Fudan's box-only M0, seed 1: mask AP 0.0). 0: full weight at once.
    pairwise_warmup: int = 0


def lr_at(s: Schedule, it: int) -> float:
    lr = s.lr * s.gamma ** sum(it >= d for d in s.decay_at)
    if it < s.warmup_iters:
        alpha = it / max(1, s.warmup_iters)
        lr *= s.warmup_factor * (1 - alpha) + alpha
    return lr


def make_optimizer(params: list, s: Schedule) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    raise ValueError(f"unknown optimizer {s.optimizer!r}; choose sgd or adamw")


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ------------------------------------------------------------------------------------- checkpoints
def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def config_from_dict(d: dict) -> CondInstConfig:
    d = dict(d)
    d["backbone"] = BackboneConfig(**d["backbone"])
    d["train_min_sizes"] = tuple(d["train_min_sizes"])
    if "rcnn" in d:  # absent from checkpoints written before Mask R-CNN existed
        d["rcnn"] = RCNNConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["rcnn"].items()})
    return CondInstConfig(**d)


def save_model(model: CondInst, path: Path, extra: dict | None = None) -> None:
    _atomic_save({"config": asdict(model.cfg), "model": model.state_dict(), **(extra or {})}, path)


def load_model(path: Path, device: torch.device | str = "cpu") -> CondInst:
    """Rebuild a model from a checkpoint written by :func:`save_model` or :func:`train`. The
    backbone's pretrained weights are not read again: the checkpoint holds them."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = config_from_dict(ckpt["config"])
    cfg.backbone = BackboneConfig(**{**asdict(cfg.backbone), "pretrained": False})
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    return model.to(device)


# ---------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    final: Path
    iterations: int
    seconds: float
    resumed_from: int = 0
    last_losses: dict = field(default_factory=dict)


def train(
    model: CondInst,
    data: TrainingSet,
    schedule: Schedule,
    out_dir: Path,
    seed: int = 0,
    device: torch.device | str = "cpu",
    init: Path | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    num_workers: int = 0,
) -> TrainResult:
    """Train ``model`` in place on ``data`` with ``schedule``; resume from ``out_dir/checkpoint.pt`` if
    present, else start from ``init`` (a model checkpoint, for fine-tuning) or the model as given.

    Under ``torchrun`` (a process group of several ranks, see :mod:`apis.distributed`) every rank calls
    this alike: the model is wrapped in DistributedDataParallel, each rank takes its contiguous slice of
    every global batch of ``schedule.batch_size`` images, gradients are averaged over ranks, and rank 0
    alone writes the checkpoint, the log (losses averaged over ranks) and the final model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if schedule.batch_size % world:
        raise ValueError(f"batch_size {schedule.batch_size} does not split over {world} processes; "
                         f"make it a multiple of {world} or launch {schedule.batch_size} processes or fewer")
    final = out_dir / "model_final.pt"
    if final.is_file():
        model.load_state_dict(torch.load(final, map_location="cpu", weights_only=False)["model"])
        return TrainResult(final, schedule.iterations, 0.0, resumed_from=schedule.iterations)
    if schedule.point_loss_weight is not None:
        model.cfg.point_loss_weight = schedule.point_loss_weight
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, schedule)
    start = 0
    ckpt_path = out_dir / "checkpoint.pt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["schedule"] != asdict(schedule) or ckpt["seed"] != seed:
            raise RuntimeError(
                f"{ckpt_path}: was written with another schedule or seed; delete {out_dir} to start over"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["iteration"]
    elif init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=False)["model"])
    log_path = out_dir / "log.csv"
    if rank == 0:
        _truncate_log(log_path, start)

    sampler = IterationSampler(len(data), schedule.batch_size, seed, schedule.iterations, start)
    batches = sampler if world == 1 else RankSlice(sampler, rank, world)
    loader = DataLoader(data, batch_sampler=batches, collate_fn=list, num_workers=num_workers,
                        persistent_workers=False)
    net = model
    if world > 1:
        gpu = None
        if device.type == "cuda":
            gpu = [device.index if device.index is not None else torch.cuda.current_device()]
            # Batch-norm layers (CondInst's mask branch) normalise over the global batch, as one process
            # does; the modules of ``model`` are swapped in place, keeping their parameters and buffers.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # On the CPU each rank normalises its slice, and rank 0's running statistics are broadcast at every
        # forward. The models give every trained parameter a gradient on every batch (zero-weighted terms
        # when a batch has no positives), so DDP need not search the graph for unused ones each iteration.
        net = DistributedDataParallel(model, device_ids=gpu)
    amp = device.type == "cuda"
    t0 = time.time()
    losses: dict = {}
    tally: dict[str, float] = {}  # point statistics summed since the last log row
    it = start
    for it, batch in enumerate(loader, start=start):
        torch.manual_seed(seed * 1_000_003 + it)  # multi-scale draw of this iteration
        for group in opt.param_groups:
            group["lr"] = lr_at(schedule, it)
        images = [im.to(device, non_blocking=True) for im, _ in batch]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for _, t in batch]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss_dict = net(images, targets, point_stats=True)
        stats = {k: loss_dict.pop(k) for k in [k for k in loss_dict if k.startswith(STAT_PREFIX)]}
        if "loss_pairwise" in loss_dict and schedule.pairwise_warmup > 0:
            loss_dict["loss_pairwise"] = loss_dict["loss_pairwise"] * min(1.0, (it + 1) / schedule.pairwise_warmup)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at iteration {it} ({ {k: float(v) for k, v in loss_dict.items()} }); "
                f"lower the learning rate or check the data"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if schedule.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, schedule.clip_grad)
        opt.step()
        losses = {k: float(v.detach()) for k, v in loss_dict.items()}
        for k, v in stats.items():
            tally[k] = tally.get(k, 0.0) + float(v)
        done = it + 1
        if done % schedule.log_every == 0 or done == schedule.iterations:
            logged, summed = {"loss": float(loss.detach()), **losses}, tally
            if world > 1:
                logged, summed = _across_ranks(logged, tally)
                losses = {k: v for k, v in logged.items() if k != "loss"}
            if rank == 0:
                _append_log(log_path, {"iteration": done, "lr": lr_at(schedule, it), **logged,
                                       **point_accuracy(summed), "seconds": round(time.time() - t0, 3)})
            tally = {}
        if rank == 0 and done % schedule.checkpoint_every == 0 and done < schedule.iterations:
            _atomic_save({"config": asdict(model.cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                          "iteration": done, "schedule": asdict(schedule), "seed": seed}, ckpt_path)
        if progress is not None:
            progress(done, schedule.iterations, losses)
    if rank == 0:
        save_model(model, final, {"iterations": schedule.iterations, "seed": seed})
        ckpt_path.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()  # no rank goes on (to load the model, say) before rank 0 has written it
    return TrainResult(final, schedule.iterations, time.time() - t0, start, losses)


@dataclass
class RankSlice:
    """Rank ``rank``'s contiguous share of each global batch of ``batches``: together the ranks see exactly
    the batches one process would, so data order and resume stay pure functions of (seed, iteration)."""

    batches: IterationSampler
    rank: int
    world: int

    def __iter__(self):
        n = self.batches.batch_size // self.world
        for batch in self.batches:
            yield batch[self.rank * n : (self.rank + 1) * n]

    def __len__(self) -> int:
        return len(self.batches)


def _across_ranks(losses: dict[str, float], tally: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """For the log: ``losses`` (each rank's are means over its slice) averaged over ranks, and the point
    statistics ``tally`` summed. A collective: every rank calls it at the same iterations."""
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (losses, tally))
    mean = {k: sum(p[0].get(k, 0.0) for p in parts) / len(parts) for k in dict.fromkeys(k for p in parts for k in p[0])}
    total: dict[str, float] = {}
    for _, t in parts:
        for k, v in t.items():
            total[k] = total.get(k, 0.0) + v
    return mean, total


def point_accuracy(tally: dict[str, float]) -> dict[str, float | str]:
    """``point_acc_{group}`` for each point group: the share of its labelled points the model got right
    in the summed statistics ``tally`` (keys of :class:`CondInst`'s ``point_stats``); "" without points."""
    out: dict[str, float | str] = {}
    for g in POINT_GROUPS:
        n = tally.get(f"{STAT_PREFIX}points_{g}", 0.0)
        out[f"point_acc_{g}"] = round(tally.get(f"{STAT_PREFIX}right_{g}", 0.0) / n, 4) if n else ""
    return out


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop rows logged after the checkpoint we resume from, so the log has no duplicated iterations."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # A kill inside _append_log can leave a half-written last row: keep only complete ones.
    keep = [r for r in rows if None not in r.values() and None not in r and r["iteration"].isdigit()
            and int(r["iteration"]) <= iteration and r.get("seconds", "") != ""]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        if keep:
            w = csv.DictWriter(f, fieldnames=list(keep[0].keys()))
            w.writeheader()
            w.writerows(keep)
    os.replace(tmp, path)


def _append_log(path: Path, row: dict) -> None:
    """Append ``row``. A log begun with other columns (a run resumed by a newer apis that logs more) is
    rewritten once with the union of both; cells a row does not have stay empty."""
    header: list[str] = []
    if path.is_file() and path.stat().st_size > 0:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
    fields = list(dict.fromkeys([*header, *row]))
    if header and fields != header:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, restval="")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        if not header:
            w.writeheader()
        w.writerow(row)
