"""Optimisation: SGD with warm-up and step decay, checkpoints, exact resume, CSV log, progress.

A run lives in one directory: ``checkpoint.pt`` (latest state, rewritten atomically every
``checkpoint_every`` iterations), ``log.csv`` (one row per logged iteration) and ``model_final.pt``
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
from torch.utils.data import DataLoader

from apis.data.loader import IterationSampler, TrainingSet
from apis.models.backbone import BackboneConfig
from apis.models.condinst import CondInst, CondInstConfig


@dataclass
class Schedule:
    """Iterations are optimizer steps of ``batch_size`` images. ``decay_at`` multiplies the LR by
    ``gamma`` at each listed iteration; the first ``warmup_iters`` ramp linearly from
    ``warmup_factor · lr``."""

    iterations: int = 300
    batch_size: int = 8
    optimizer: str = "sgd"  # or "adamw"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    warmup_factor: float = 0.001
    decay_at: tuple[int, ...] = ()
    gamma: float = 0.1
    clip_grad: float | None = 10.0
    checkpoint_every: int = 50
    log_every: int = 10
    point_loss_weight: float | None = None  # overrides the model's weight for this schedule


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
    model = CondInst(cfg)
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
    present, else start from ``init`` (a model checkpoint, for fine-tuning) or the model as given."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
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
    _truncate_log(log_path, start)

    sampler = IterationSampler(len(data), schedule.batch_size, seed, schedule.iterations, start)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=list, num_workers=num_workers,
                        persistent_workers=False)
    amp = device.type == "cuda"
    t0 = time.time()
    losses: dict = {}
    it = start
    for it, batch in enumerate(loader, start=start):
        torch.manual_seed(seed * 1_000_003 + it)  # multi-scale draw of this iteration
        for group in opt.param_groups:
            group["lr"] = lr_at(schedule, it)
        images = [im.to(device, non_blocking=True) for im, _ in batch]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for _, t in batch]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss_dict = model(images, targets)
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
        done = it + 1
        if done % schedule.log_every == 0 or done == schedule.iterations:
            _append_log(log_path, {"iteration": done, "lr": lr_at(schedule, it), "loss": float(loss.detach()), **losses,
                                   "seconds": round(time.time() - t0, 3)})
        if done % schedule.checkpoint_every == 0 and done < schedule.iterations:
            _atomic_save({"config": asdict(model.cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                          "iteration": done, "schedule": asdict(schedule), "seed": seed}, ckpt_path)
        if progress is not None:
            progress(done, schedule.iterations, losses)
    save_model(model, final, {"iterations": schedule.iterations, "seed": seed})
    ckpt_path.unlink(missing_ok=True)
    return TrainResult(final, schedule.iterations, time.time() - t0, start, losses)


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
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row.keys()))
        if new:
            w.writeheader()
        w.writerow(row)
