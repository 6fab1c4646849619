"""Which supervision makes M0's masks worth keeping? One ablation row per recipe, beside the yardsticks.

Every recipe trains M0 from the same P0 (one random answered point per object, seed ``--seed``) for
the same iterations, then reports val mask AP (and its share of the full-mask model's) and the pool
mask IoU of the exported masks (P0's answers forced), beside the no-model yardsticks on the same pool:
the box, the inscribed ellipse, GrabCut from the box and GrabCut with P0's points. "+ GrabCut" is the
pool mask IoU of the export refined with GrabCut started from the model's map (``refine="grabcut"``).

    python benchmarks/mask_recipe.py --out runs/recipe                       # every recipe, built-in set
    python benchmarks/mask_recipe.py --out runs/recipe --only points,grabcut --seeds 0,1,2
    python benchmarks/mask_recipe.py --out runs/recipe --train my/train.json --val my/val.json

Each (recipe, seed) trains in its own process and caches OUT/<recipe>/seed<k>/result.json, so an
interrupted benchmark resumes; the yardsticks are cached in OUT/yardsticks-seed<k>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# recipe: (model overrides, supervision[, schedule overrides]) where supervision is "points" (P0),
# "boxes" (no point) or "masks" (every GT mask). GrabCut pseudo masks (apis.pseudo_masks) come with
# pseudo_mask_weight > 0.
PT1 = {"point_loss_weight": 1.0}
# The rows measured before BoxInst's projection term joined the tiny preset (2026-12-04) turn it off, so they
# still reproduce.
NO_PROJ = {"box_projection_weight": 0.0}

RECIPES: dict[str, tuple] = {
    # The point loss's weight for M0 is the schedule's (the tiny preset's initial.point_loss_weight, 0.1);
    # the rows measured before 0.1 became the default name 1.0 explicitly, so they still reproduce.
    # The paper's PointSup loss alone.
    "points": ({**NO_PROJ, "pseudo_mask_weight": 0.0}, "points", PT1),
    # configs/paper.yaml: the same, with the point loss at the schedule's weight (0.1 for M0), as a run of it trains
    "paper": ({**NO_PROJ, "pseudo_mask_weight": 0.0}, "points"),
    "boxinst": ({"box_projection_weight": 1.0, "pairwise_weight": 1.0, "pseudo_mask_weight": 0.0}, "points",
                {**PT1, "pairwise_warmup": 0}),
    "projection": ({"box_projection_weight": 1.0, "pseudo_mask_weight": 0.0}, "points", PT1),
    # the same with the colour-pairwise term ramped in as the tiny preset ramps it (issue 37: no pseudo masks at all,
    # as a candidate beside auto's)
    "projection+pairwise-warmup": ({"box_projection_weight": 1.0, "pairwise_weight": 1.0, "pseudo_mask_weight": 0.0},
                                   "points", {**PT1, "pairwise_warmup": 150}),
    # GrabCut seeded with P0's points
    "grabcut": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points", PT1),
    # GrabCut from the box alone (loop.pseudo_masks: grabcut), the point loss at 0.1: the tiny default before
    # loop.pseudo_masks: auto (which picks GrabCut on the built-in set)
    "grabcut-box": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points"),
    # the tiny default before
    "grabcut-box-pt1": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points", PT1),
    # between the two
    "grabcut-box-pt0.3": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points", {"point_loss_weight": 0.3}),
    "grabcut-box-lr2": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points", {"lr": 0.02, **PT1}),
    # no P0 at all: boxes and GrabCut from them
    "box-start": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "boxes", PT1),
    "grabcut+projection": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0}, "points", PT1),
    # every GT mask: the reference (no point loss)
    "masks": ({**NO_PROJ, "pseudo_mask_weight": 0.0}, "masks"),
    # loop.pseudo_masks: auto (the tiny default): the no-model source the answers judge best, per object the next
    # where it fails the checks; the point loss at the schedule's 0.1, at 1.0, or the pseudo masks weighed 0.1.
    # Each object's mask weighed by its source's agreement with the held-out answers (apis.mask_checks.source_weight);
    # "auto-flat": every mask at 1.0, the default before (the rows below were measured so).
    "auto": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points"),
    "auto-flat": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points"),
    "auto-pt1": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points", PT1),
    "auto-w0.1": ({**NO_PROJ, "pseudo_mask_weight": 0.1}, "points"),
    # configs/box_start.yaml: no P0, so the box check alone picks the source (apis.mask_checks.pick_source)
    "auto-box-start": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "boxes"),
    # BoxInst's projection term (colour-free: a tight box's object reaches its every row and column) beside auto's
    # pseudo masks, from P0 and from the box alone (model.box_projection_weight: 1.0): the tiny default since 2026-12-04
    "auto+projection": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0}, "points"),
    "auto-box-start+projection": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0}, "boxes"),
    # auto+projection with each source's pixels weighed per band of their box's normalised radius by the answers
    # (apis.mask_checks.SourceScore.band_weights; the default since 2026-12-04's fifth sitting)
    "auto-bands": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0}, "points"),
    # the box-only start with the same: no answers, so the shapes' bands are weighed by their agreement with GrabCut
    # where GrabCut passes the box check (apis.mask_checks.cross_agreement)
    "auto-box-start-bands": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0}, "boxes"),
    # Why does the box-only start trail the P0 start (Penn-Fudan)? P0's masks, checks and band weights, without the
    # point loss on P0's answers (point_loss_weight 0): what the answers give through the masks alone.
    "auto-bands-no-point-loss": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0}, "points",
                                 {"point_loss_weight": 0.0}),
    # The box-only start with BoxInst's colour-pairwise term beside the projection and the pseudo masks (Penn-Fudan's
    # box-only gap, 2026-12-05), and BoxInst alone (projection + pairwise, no pseudo masks).
    "auto-box-start-bands+pairwise": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0,
                                       "pairwise_weight": 1.0}, "boxes", {"pairwise_warmup": 0}),
    "auto-bands+pairwise": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0, "pairwise_weight": 1.0},
                            "points", {"pairwise_warmup": 0}),
    # the same with the pairwise term ramped in over the first quarter of M0's iterations (Schedule.pairwise_warmup;
    # the tiny preset's since 2026-12-05)
    "auto-box-start-bands+pairwise-warmup": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0,
                                              "pairwise_weight": 1.0}, "boxes", {"pairwise_warmup": 150}),
    "auto-bands+pairwise-warmup": ({"pseudo_mask_weight": 1.0, "box_projection_weight": 1.0, "pairwise_weight": 1.0},
                                   "points", {"pairwise_warmup": 150}),
    "boxinst-box-start": ({"pseudo_mask_weight": 0.0, "box_projection_weight": 1.0, "pairwise_weight": 1.0}, "boxes",
                          {"pairwise_warmup": 0}),
    # the same ramped in as the tiny preset ramps it: what a box-only start learns where nothing judges a shape
    "boxinst-box-start-warmup": ({"pseudo_mask_weight": 0.0, "box_projection_weight": 1.0, "pairwise_weight": 1.0},
                                 "boxes", {"pairwise_warmup": 150}),
    # One named no-model source for every object, trusted blind (loop.pseudo_masks: ellipse / box; GrabCut from the
    # box is "grabcut-box" above): the source-choice ablation beside "auto".
    "ellipse": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points"),
    "box": ({**NO_PROJ, "pseudo_mask_weight": 1.0}, "points"),
}

#: Measured before each pseudo mask was weighed by its source's trust: their masks count fully, as then.
FLAT = {"auto-flat", "auto-pt1", "auto-w0.1"}
#: Measured before the weights were given per band of the box: one weight per source, as then (the box-only rows:
#: since 2026-12-04's fifth sitting the ellipse's one weight is its agreement with GrabCut, 1 before).
ONE_WEIGHT = {"auto", "auto+projection", "auto-box-start", "auto-box-start+projection", *FLAT}


def datasets(args):
    from apis.data.coco import load_coco
    from apis.data.synthetic import SyntheticConfig, generate

    if args.train:
        return load_coco(Path(args.train)), load_coco(Path(args.val))
    paths = generate(args.out / "data", SyntheticConfig())
    return load_coco(paths["train"]), load_coco(paths["val"])


def p0_points(train, seed: int) -> dict[int, list[tuple[int, int, int]]]:
    from apis.supervision import random_points

    return random_points(train, 1, seed)


def run_one(args, name: str, seed: int, out: Path) -> dict:
    import dataclasses

    import torch

    from apis.config import load_config
    from apis.data.loader import TrainingSet
    from apis.evaluate import evaluate
    from apis.export import export_masks, pool_mask_iou
    from apis.models import build_model
    from apis.pseudo_masks import auto_pseudo_masks, cached_grabcut_pseudo_masks, training_pseudo_masks
    from apis.train import train

    train_set, val_set = datasets(args)
    cfg = load_config(args.config) if args.config else load_config()
    overrides, supervision, *rest = RECIPES[name]
    schedule = rest[0] if rest else {}
    model_cfg = dataclasses.replace(cfg.model, num_classes=len(train_set.categories), **overrides)
    pts = p0_points(train_set, seed)
    pseudo = None
    if model_cfg.pseudo_mask_weight > 0 and name.startswith("auto"):
        pseudo = auto_pseudo_masks(args.out / "cache", train_set, None if supervision == "boxes" else pts,
                                   by_band=name not in ONE_WEIGHT)[0]
        if name in FLAT:
            pseudo = {i: dataclasses.replace(m, weight=1.0) for i, m in pseudo.items()}
    elif model_cfg.pseudo_mask_weight > 0 and name in ("ellipse", "box"):
        pseudo = training_pseudo_masks(args.out / "cache", train_set, name, None)
    elif model_cfg.pseudo_mask_weight > 0:
        box_only = name.startswith("grabcut-box") or supervision == "boxes"
        pseudo = cached_grabcut_pseudo_masks(args.out / "cache", train_set, None if box_only else pts)
    data = (TrainingSet(train_set, mask_ids={a.id for a in train_set.instances()}) if supervision == "masks"
            else TrainingSet(train_set, points=None if supervision == "boxes" else pts, pseudo_masks=pseudo))
    torch.manual_seed(seed)
    model = build_model(model_cfg)
    sched = dataclasses.replace(cfg.initial, iterations=args.iterations,
                                decay_at=tuple(int(args.iterations * f) for f in (0.75,)), **schedule)
    t0 = time.time()
    r = train(model, data, sched, out / "model", seed=seed,
              progress=lambda d, t, _: print(f"\r{name} seed {seed}: {d}/{t}", end="", file=sys.stderr, flush=True))
    seconds = time.time() - t0 if r.resumed_from == 0 else r.seconds
    ev = evaluate(model, val_set, batch_size=8)
    exported = export_masks(model, train_set, pts)
    refined = export_masks(model, train_set, pts, refine="grabcut")
    return {"recipe": name, "seed": seed, "segm": ev.segm, "bbox": ev.bbox,
            "pool_iou": pool_mask_iou(exported, train_set), "pool_iou_refined": pool_mask_iou(refined, train_set),
            "iterations": args.iterations,
            "train_seconds": seconds, "threads": torch.get_num_threads(), "model": dataclasses.asdict(model_cfg)}


def yardsticks(args, seed: int) -> dict:
    from apis.pseudo_masks import cached_grabcut_pseudo_masks
    from apis.yardsticks import pool_ious, pool_sample

    path = args.out / f"yardsticks-seed{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    train_set, _ = datasets(args)
    sample = pool_sample([a.id for a in train_set.instances()], args.objects)
    cache = args.out / "cache"
    ests = pool_ious(train_set, sample, cached_grabcut_pseudo_masks(cache, train_set, None, sample.instance_ids),
                     cached_grabcut_pseudo_masks(cache, train_set, p0_points(train_set, seed), sample.instance_ids))
    res = {m: {"mean": e.mean, "se": e.se, "n": e.n} for m, e in ests.items()}
    path.write_text(json.dumps(res, indent=1))
    return res


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/recipe"))
    ap.add_argument("--only", default="", help="comma-separated recipes (default: all)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--config", type=Path, default=None, help="a run config (preset and model settings)")
    ap.add_argument("--train", default="", help="COCO train json with masks (default: the built-in set)")
    ap.add_argument("--val", default="")
    ap.add_argument("--objects", type=int, default=1200, help="pool objects the yardsticks are measured on")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.child:
        name, seed = args.child.rsplit(":", 1)
        out = args.out / name / f"seed{seed}"
        res = run_one(args, name, int(seed), out)
        tmp = out / "result.json.tmp"
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, out / "result.json")
        return
    names = [n for n in (args.only.split(",") if args.only else RECIPES) if n]
    for n in names:
        if n not in RECIPES:
            sys.exit(f"unknown recipe {n!r}; choose from {', '.join(RECIPES)}")
    results: dict[str, list[dict]] = {}
    for name in names:
        for seed in seeds:
            path = args.out / name / f"seed{seed}" / "result.json"
            # A result from before the refined export was measured: the child reloads the trained model.
            if not path.is_file() or "pool_iou_refined" not in json.loads(path.read_text()):
                path.parent.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, __file__, "--out", str(args.out), "--iterations", str(args.iterations),
                       "--child", f"{name}:{seed}", "--objects", str(args.objects)]
                for flag in ("config", "train", "val"):
                    if getattr(args, flag):
                        cmd += [f"--{flag}", str(getattr(args, flag))]
                subprocess.run(cmd, check=True)
                print(file=sys.stderr)
            results.setdefault(name, []).append(json.loads(path.read_text()))
    full = {r["seed"]: r["segm"]["AP"] for r in results.get("masks", [])}
    print(f"\n{'recipe':22} {'mask AP':>14} {'of full':>8} {'box AP':>7} {'pool IoU':>14} {'+ GrabCut':>14} "
          f"{'s/it':>6}")
    for name, rs in results.items():
        aps = [r["segm"]["AP"] for r in rs]
        share = [r["segm"]["AP"] / full[r["seed"]] for r in rs if full.get(r["seed"])]
        print(f"{name:22} {mean_sd(aps):>14} {(f'{100 * statistics.fmean(share):.0f}%' if share else '—'):>8} "
              f"{statistics.fmean(r['bbox']['AP'] for r in rs):7.2f} {mean_sd([r['pool_iou'] for r in rs]):>14} "
              f"{mean_sd([r['pool_iou_refined'] for r in rs]):>14} "
              f"{statistics.fmean(r['train_seconds'] / r['iterations'] for r in rs):6.2f}")
    print("\nyardsticks on the same pool (mean IoU ± s.e. over objects; grabcut_points uses P0's points):")
    for seed in seeds:
        ys = yardsticks(args, seed)
        print(f"  seed {seed}: " + ", ".join(f"{m} {v['mean']:.3f} ± {v['se']:.3f}" for m, v in ys.items())
              + f" (n = {next(iter(ys.values()))['n']})")
    print(f"\n{args.iterations} iterations, seeds {args.seeds}, CPU, "
          f"{results[names[0]][0]['threads']} threads, config {args.config or 'tiny preset'}")


if __name__ == "__main__":
    main()
