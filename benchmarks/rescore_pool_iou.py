"""Pool mask IoU of a finished comparison's checkpoints, exported again with the current export code.

The export (and so ``pool_iou``) does not change what is trained: when only the export changes, scoring the
checkpoints of an ``apis compare`` folder again gives the column a new run would write, without training.
For every strategy, seed and step of ``COMPARISON/results.csv`` this loads M(step) from
``COMPARISON/seed{N}/{strategy}``, exports the pool objects that row was measured on (the yardsticks'
fixed sample, ``loop.yardstick_objects``) with the answers of steps ≤ step and the project's
``loop.refine_masks``, and prints the old and new pool IoU beside the row's no-model yardsticks (the best of
box, ellipse, GrabCut and GrabCut + points) and the old and new ``trust_spearman`` (``apis_score`` against the
true IoU), then the mean over seeds and the paired Δ to Random. CPU is enough::

    python benchmarks/rescore_pool_iou.py demo            # writes demo/pool_iou_rescored.csv too
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from apis.config import load_config
from apis.data.coco import load_coco
from apis.export import export_masks, load_step_model, pool_mask_ious, trust_rank_correlation
from apis.store import DB_NAME, Store
from apis.yardsticks import pool_sample

YARDSTICKS = ("pool_iou_box", "pool_iou_ellipse", "pool_iou_grabcut", "pool_iou_grabcut_points")


def rescore(project: Path, step: int) -> tuple[float, float, float | None]:
    """(pool IoU, share of refined masks that GrabCut started from the box, trust Spearman) of M(step) of
    ``project``."""
    cfg = load_config(project / "config.yaml")
    dataset = load_coco(Path(cfg.data.train))
    ids = (pool_sample([a.id for a in dataset.instances()], cfg.loop.yardstick_objects).instance_ids
           if cfg.loop.yardstick_objects > 0 else None)
    with Store.open(project / DB_NAME) as store:
        model = load_step_model(project, store, step, cfg.loop.prediction_set, cfg.loop.ensemble_size, "cpu")
        result = export_masks(model, dataset, store, "cpu", cfg.loop.prediction_set, max_step=step,
                              batch_size=cfg.eval_batch_size, refine=cfg.loop.refine_masks, instance_ids=ids)
    ious = pool_mask_ious(result, dataset, ids)
    refined = [e.refinement for e in result.instances if e.refinement is not None]
    from_box = refined.count("grabcut_box") / len(refined) if refined else 0.0
    return float(np.mean(list(ious.values()))), from_box, trust_rank_correlation(result, ious)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("comparison", type=Path, help="an `apis compare` folder (holds results.csv)")
    args = ap.parse_args(argv)
    rows = list(csv.DictReader(open(args.comparison / "results.csv")))
    if not rows:
        print(f"{args.comparison / 'results.csv'}: no rows; run `apis compare` first", file=sys.stderr)
        return 2
    done: dict[tuple[int, int], tuple[float, float, float | None]] = {}  # step 0: shared by the strategies
    out = []
    print("| strategy | seed | step | pool IoU before | now | from the box | best no-model | lead | "
          "trust Spearman before | now |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        strategy, seed, step = r["strategy"], int(r["seed"]), int(r["step"])
        key = (seed, step)
        if step > 0 or key not in done:
            done[key] = rescore(args.comparison / f"seed{seed}" / strategy, step)
        iou, from_box, rho = done[key]
        best = max(float(r[k]) for k in YARDSTICKS if r.get(k) not in (None, ""))
        out.append({**r, "pool_iou_before": r["pool_iou"], "pool_iou": round(iou, 5),
                    "refined_from_box": round(from_box, 4), "trust_spearman_before": r.get("trust_spearman", ""),
                    "trust_spearman": "" if rho is None else round(rho, 4), "pool_iou_best_no_model": best})
        old_rho = r.get("trust_spearman") or "nan"
        print(f"| {strategy} | {seed} | {step} | {float(r['pool_iou']):.3f} | {iou:.3f} | {from_box:.0%} | "
              f"{best:.3f} | {iou - best:+.3f} | {float(old_rho):.2f} | "
              f"{'—' if rho is None else f'{rho:.2f}'} |", flush=True)
    path = args.comparison / "pool_iou_rescored.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out[0]))
        w.writeheader()
        w.writerows(out)
    summarise(out)
    print(f"wrote {path}")
    return 0


def summarise(rows: list[dict]) -> None:
    """Mean ± sd over seeds per strategy and step; paired Δ to Random ± its standard error."""
    by: dict[tuple[str, int], dict[int, dict]] = defaultdict(dict)
    for r in rows:
        by[(r["strategy"], int(r["step"]))][int(r["seed"])] = r
    print("\n| strategy | step | pool IoU (mean ± sd) | Δ to Random | best no-model | lead |")
    print("|---|---|---|---|---|---|")
    for (strategy, step), seeds in sorted(by.items(), key=lambda kv: (kv[0][0] != "random", kv[0])):
        v = np.array([float(r["pool_iou"]) for r in seeds.values()])
        gp = np.array([float(r["pool_iou_best_no_model"]) for r in seeds.values()])
        delta = ""
        if strategy != "random" and ("random", step) in by:
            base = by[("random", step)]
            d = np.array([float(seeds[s]["pool_iou"]) - float(base[s]["pool_iou"]) for s in seeds if s in base])
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
            delta = f"{d.mean():+.3f} ± {se:.3f}"
        sd = v.std(ddof=1) if len(v) > 1 else 0.0
        print(f"| {strategy} | {step} | {v.mean():.3f} ± {sd:.3f} | {delta} | {gp.mean():.3f} | "
              f"{v.mean() - gp.mean():+.3f} |")


if __name__ == "__main__":
    sys.exit(main())
