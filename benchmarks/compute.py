"""Compute cost of each phase: training, evaluation, inference and selection, with peak memory.

    python benchmarks/compute.py                                  # tiny on the CPU; coco when a GPU is present
    python benchmarks/compute.py --preset tiny --device cpu --iterations 20
    python benchmarks/compute.py --checkpoint demo/seed0/shared/models/step0/model_final.pt   # a trained M0

On the built-in synthetic dataset at the preset's scale (tiny: 160 px images; coco: 640 px images and
the paper's model, CondInst R-50 at 800 px, batch 16; random backbone weights, which cost the same as
ImageNet's), it measures

* training: seconds per iteration of the preset's M0 schedule (P0 points, after ``--warmup``
  iterations);
* evaluation: validation images per second of ``apis.evaluate.evaluate`` (inference, mask encoding and
  COCOeval);
* inference: pool images per second of a plain forward pass ``model(images)`` (detections with masks);
* selection: pool instances per second of one selection pass (entropy over prediction set A, as
  ``apis run`` does at step 1), and its time over the inference pass on the same images (goal ≤ 1.2).
  Inference and selection alternate ``--repeats`` times; the fastest of each counts, as the machine may
  be shared.

Peak memory is the process's resident peak during each phase (restarted per phase on Linux) and, on a
GPU, the peak allocated by tensors. Without ``--checkpoint``, inference and selection use the model just
trained for a few iterations, which detects little; a trained model (more detections) costs more in
inference, so pass one for the ratio that matters. Results are also written to OUT/<preset>_<device>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from apis.config import preset as preset_config
from apis.data.coco import load_coco
from apis.data.loader import TrainingSet, image_tensor
from apis.data.synthetic import SyntheticConfig, generate
from apis.evaluate import evaluate
from apis.memory import peak_cuda_mb, peak_rss_mb, reset_peak
from apis.models import build_model
from apis.models.backbone import BackboneConfig
from apis.oracle import MaskOracle, initial_answers
from apis.selection.select import select_points
from apis.train import load_model, pick_device, train

# Dataset per preset: (image side in pixels, train images, validation images).
DATA = {"tiny": (160, 240, 120), "coco": (640, 160, 80)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def phase(device: torch.device, fn: Callable[[], object]) -> tuple[object, float, float, float | None]:
    """Run ``fn``; return (its result, seconds, peak resident MiB, peak GPU MiB) over the call."""
    synchronize(device)
    reset_peak()
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0, peak_rss_mb(), peak_cuda_mb()


@torch.no_grad()
def inference_pass(model: torch.nn.Module, dataset, device: torch.device, batch_size: int) -> int:
    """A plain forward pass over the pool images, batched and loaded as selection loads them; returns the
    number of detections (so nothing is skipped as unused)."""
    model.eval()
    detections = 0
    images = [im for im in dataset.images if im.pool]
    for start in range(0, len(images), batch_size):
        outs = model([image_tensor(dataset, im).to(device) for im in images[start : start + batch_size]])
        detections += sum(int(o["scores"].numel()) for o in outs)
    return detections


def run(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    name = args.preset if args.preset != "auto" else ("coco" if device.type == "cuda" else "tiny")
    size, n_train, n_val = DATA[name]
    n_train = args.train_images or n_train
    n_val = args.val_images or n_val
    cfg = preset_config(name)
    paths = generate(args.out / f"data_{name}_{n_train}_{n_val}",
                     SyntheticConfig(seed=0, image_size=size, train_images=n_train, val_images=n_val))
    train_set, val_set = load_coco(paths["train"]), load_coco(paths["val"])
    pool = [im for im in train_set.images if im.pool]
    instances = sum(len(im.pool) for im in pool)
    model_cfg = dataclasses.replace(cfg.model, num_classes=len(train_set.categories),
                                    backbone=BackboneConfig(**{**dataclasses.asdict(cfg.model.backbone),
                                                               "pretrained": False}))
    points: dict[int, list[tuple[int, int, int]]] = {}
    for a in initial_answers(train_set, MaskOracle(train_set), seed=0):
        points.setdefault(a.instance_id, []).append((a.x, a.y, a.label))
    rows: list[dict] = []

    # ----------------------------------------------------------------------------------- training
    torch.manual_seed(0)
    model = build_model(model_cfg)
    total = args.warmup + args.iterations
    sched = dataclasses.replace(cfg.initial, iterations=total, checkpoint_every=total + 1, log_every=total,
                                batch_size=args.batch_size or cfg.initial.batch_size)
    stamps: dict[int, float] = {}

    def mark(done: int, _total: int, _losses: dict) -> None:
        synchronize(device)
        stamps[done] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        _, _, rss, gpu = phase(device, lambda: train(model, TrainingSet(train_set, points=points), sched,
                                                     Path(tmp) / "model", seed=0, device=device, progress=mark))
    s_per_it = (stamps[total] - stamps[args.warmup]) / args.iterations
    rows.append({"phase": "training", "work": f"{args.iterations} it × {sched.batch_size} images",
                 "seconds": s_per_it * args.iterations, "rate": f"{s_per_it:.3f} s/it",
                 "rss_mb": rss, "gpu_mb": gpu})

    if args.checkpoint is not None:
        model = load_model(args.checkpoint, device)
    model.eval()
    batch = cfg.eval_batch_size

    # --------------------------------------------------------------------------------- evaluation
    ev, secs, rss, gpu = phase(device, lambda: evaluate(model, val_set, device, batch_size=batch))
    rows.append({"phase": "evaluation", "work": f"{len(val_set.images)} val images", "seconds": secs,
                 "rate": f"{len(val_set.images) / secs:.1f} images/s", "rss_mb": rss, "gpu_mb": gpu,
                 "mask_ap": ev.segm["AP"]})

    # ---------------------------------------------------------------------- inference vs selection
    labelled = {i: [(x, y) for x, y, _ in ps] for i, ps in points.items()}
    best: dict[str, tuple] = {}
    for _ in range(args.repeats):
        for key, fn in (("inference", lambda: inference_pass(model, train_set, device, batch)),
                        ("selection", lambda: select_points(model, train_set, labelled, "entropy", 1, 0, device,
                                                            batch_size=batch, prediction_set="A"))):
            result = phase(device, fn)
            if key not in best or result[1] < best[key][1]:
                best[key] = result
    detections, secs, rss, gpu = best["inference"]
    rows.append({"phase": "inference", "work": f"{len(pool)} pool images ({detections} detections)",
                 "seconds": secs, "rate": f"{len(pool) / secs:.1f} images/s", "rss_mb": rss, "gpu_mb": gpu,
                 "detections": detections})
    choices, secs, rss, gpu = best["selection"]
    rows.append({"phase": "selection (A, entropy)", "work": f"{len(pool)} pool images, {instances} instances",
                 "seconds": secs, "rate": f"{len(choices) / secs:.1f} instances/s", "rss_mb": rss, "gpu_mb": gpu})
    ratio = best["selection"][1] / best["inference"][1]
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"preset": name, "device": str(device), "gpu": gpu_name, "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "image_size": size, "train_images": len(pool), "val_images": len(val_set.images),
            "batch_size": sched.batch_size, "eval_batch_size": batch, "warmup": args.warmup,
            "iterations": args.iterations, "repeats": args.repeats,
            "checkpoint": str(args.checkpoint) if args.checkpoint else None, "rows": rows,
            "selection_over_inference": ratio}


def print_table(r: dict) -> None:
    print("\n| phase | work | seconds | rate | peak RSS MB | peak GPU MB |\n|---|---|---|---|---|---|")
    for row in r["rows"]:
        gpu = f"{row['gpu_mb']:.0f}" if row["gpu_mb"] is not None else "-"
        print(f"| {row['phase']} | {row['work']} | {row['seconds']:.1f} | {row['rate']} | {row['rss_mb']:.0f} "
              f"| {gpu} |")
    goal = "meets" if r["selection_over_inference"] <= 1.2 else "misses"
    print(f"\nselection / inference over the same {r['train_images']} images: {r['selection_over_inference']:.2f} "
          f"({goal} the goal ≤ 1.2)")
    if r["rows"][2]["detections"] < r["train_images"]:
        print("(the model detects under one object per image, so inference skips most of its mask work and the "
              "ratio overstates selection's cost: pass --checkpoint with a trained model)")
    model = r["checkpoint"] or f"the model after {r['warmup'] + r['iterations']} iterations"
    print(f"{r['preset']} preset on {r['gpu'] or 'CPU'} ({r['device']}, {r['cpus']} CPUs, {r['threads']} threads, "
          f"torch {r['torch']}); {r['image_size']} px synthetic images; training batch {r['batch_size']}, "
          f"{r['warmup']} warm-up iterations; evaluation/selection batch {r['eval_batch_size']}; "
          f"inference and selection with {model}, fastest of {r['repeats']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=("auto", "tiny", "coco"), default="auto",
                    help="auto: coco when the device is a GPU, else tiny")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--iterations", type=int, default=20, help="timed training iterations")
    ap.add_argument("--warmup", type=int, default=3, help="training iterations before timing starts")
    ap.add_argument("--repeats", type=int, default=2, help="inference and selection passes; the fastest counts")
    ap.add_argument("--train-images", type=int, default=0, help="pool size (0: the preset's default)")
    ap.add_argument("--val-images", type=int, default=0, help="validation images (0: the preset's default)")
    ap.add_argument("--batch-size", type=int, default=0, help="training batch (0: the preset's)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a trained model for evaluation and selection")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_compute"))
    args = ap.parse_args()
    if args.iterations < 1 or args.warmup < 1 or args.repeats < 1:
        sys.exit("--iterations, --warmup and --repeats must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    r = run(args)
    path = args.out / f"{r['preset']}_{r['device'].replace(':', '')}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(r, indent=1))
    os.replace(tmp, path)
    print_table(r)


if __name__ == "__main__":
    main()
