"""Mask AP by supervision and backbone on the built-in dataset (CPU, same iterations and seed).

Each configuration trains in its own process (so peak memory is its own) and is evaluated on the
validation split. Results are cached in OUT/<name>/result.json, so an interrupted benchmark resumes.

    python benchmarks/supervision.py --out runs/bench_supervision --iterations 600
    python benchmarks/supervision.py --only lite0-pre-full,lite0-pre-10pt,lite0-pre-1pt   # issue 3's table

Prints a table: configuration, mask AP/AP50/AP75/APs/APm/APl, box AP, seconds per iteration,
peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    # name: (backbone, pretrained, supervision, points per instance)
    "lite0-pre-full": ("efficientnet_lite0", True, "masks", 0),
    "lite0-pre-10pt": ("efficientnet_lite0", True, "points", 10),
    "lite0-pre-1pt": ("efficientnet_lite0", True, "points", 1),
    "lite0-scratch-full": ("efficientnet_lite0", False, "masks", 0),
    "lite0-scratch-1pt": ("efficientnet_lite0", False, "points", 1),
    "resnet18-scratch-full": ("resnet18", False, "masks", 0),
    "resnet18-scratch-1pt": ("resnet18", False, "points", 1),
}


def run_one(name: str, out: Path, iterations: int, seed: int, projection: float | None) -> dict:
    import dataclasses

    import torch

    from apis.config import preset
    from apis.data.coco import load_coco
    from apis.data.loader import TrainingSet
    from apis.data.synthetic import SyntheticConfig, generate
    from apis.evaluate import evaluate
    from apis.models import build_model
    from apis.models.backbone import BackboneConfig
    from apis.oracle import MaskOracle, initial_answers
    from apis.train import train

    backbone, pretrained, supervision, k = CONFIGS[name]
    paths = generate(out.parent / "data", SyntheticConfig())
    tr, va = load_coco(paths["train"]), load_coco(paths["val"])
    cfg = preset("tiny")
    # PointSup's supervision alone (no GrabCut pseudo masks: benchmarks/mask_recipe.py measures those).
    model_cfg = dataclasses.replace(cfg.model, num_classes=len(tr.categories), pseudo_mask_weight=0.0,
                                    backbone=BackboneConfig(backbone, pretrained=pretrained))
    if projection is not None:
        model_cfg.box_projection_weight = projection
    pts, mask_ids = None, None
    if supervision == "masks":
        mask_ids = {a.id for a in tr.instances()}
    else:
        pts = {}
        for a in initial_answers(tr, MaskOracle(tr), seed, k=k):
            pts.setdefault(a.instance_id, []).append((a.x, a.y, a.label))
    torch.manual_seed(seed)
    model = build_model(model_cfg)
    sched = dataclasses.replace(cfg.initial, iterations=iterations, decay_at=(int(iterations * 0.75),))
    t0 = time.time()
    r = train(model, TrainingSet(tr, points=pts, mask_ids=mask_ids), sched, out / "model", seed=seed,
              progress=lambda d, t, _: print(f"\r{name}: {d}/{t}", end="", file=sys.stderr, flush=True))
    train_s = time.time() - t0 if r.resumed_from == 0 else r.seconds
    ev = evaluate(model, va, batch_size=8)
    return {"name": name, "segm": ev.segm, "bbox": ev.bbox, "s_per_it": train_s / iterations,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "iterations": iterations, "seed": seed, "threads": torch.get_num_threads(),
            "box_projection_weight": model_cfg.box_projection_weight}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_supervision"))
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated configuration names")
    ap.add_argument("--projection", type=float, default=None, help="override box_projection_weight")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        out = args.out / args.child
        res = run_one(args.child, out, args.iterations, args.seed, args.projection)
        tmp = out / "result.json.tmp"
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, out / "result.json")
        return
    names = [n for n in (args.only.split(",") if args.only else CONFIGS) if n]
    results = []
    for name in names:
        if name not in CONFIGS:
            sys.exit(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
        path = args.out / name / "result.json"
        if not path.is_file():
            (args.out / name).mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, __file__, "--out", str(args.out), "--iterations", str(args.iterations),
                   "--seed", str(args.seed), "--child", name]
            if args.projection is not None:
                cmd += ["--projection", str(args.projection)]
            subprocess.run(cmd, check=True)
            print(file=sys.stderr)
        results.append(json.loads(path.read_text()))
    print(f"\n{'configuration':24} {'mask AP':>8} {'AP50':>6} {'AP75':>6} {'APs':>6} {'APm':>6} {'APl':>6} "
          f"{'box AP':>7} {'s/it':>6} {'peak MB':>8}")
    for r in results:
        s = r["segm"]
        print(f"{r['name']:24} {s['AP']:8.2f} {s['AP50']:6.2f} {s['AP75']:6.2f} {s['APs']:6.2f} {s['APm']:6.2f} "
              f"{s['APl']:6.2f} {r['bbox']['AP']:7.2f} {r['s_per_it']:6.2f} {r['peak_rss_mb']:8.0f}")
    print(f"\n{results[0]['iterations']} iterations, batch 8, seed {results[0]['seed']}, "
          f"{results[0]['threads']} threads, CPU, tiny preset, box_projection_weight "
          f"{results[0]['box_projection_weight']}")


if __name__ == "__main__":
    main()
