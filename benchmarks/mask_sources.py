"""Do the answers pick the right mask source? The no-model sources judged without GT, beside their true IoU.

For each dataset: P0 (one random answered point per pool object, seed ``--seed``), then each no-model source
(GrabCut from the box, the ellipse, the box filled; none of them saw an answer) is scored on those answers and
on the box check (:mod:`apis.mask_checks`), and its true mean IoU with the GT masks is measured over the same
pool. ``auto`` is what ``loop.pseudo_masks: auto`` hands to training: the chosen source, with the per-object
fallback. At the end, Spearman's rank correlation between the estimate (agreement with the answers) and the true
IoU over every source of every dataset, and whether each dataset's choice is its best source by GT.

    python benchmarks/mask_sources.py --data builtin --data data/dsb100/train/annotations.json \\
        --data data/pennfudan/train/annotations.json --cache runs/mask-sources

``builtin`` is the built-in set (seed 0, train split). GrabCut's masks are cached under ``--cache``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def load(spec: str, cache: Path):
    from apis.data.coco import load_coco
    from apis.data.synthetic import SyntheticConfig, generate

    if spec == "builtin":
        return "built-in", load_coco(generate(cache / "builtin", SyntheticConfig())["train"])
    return Path(spec).parent.parent.name or spec, load_coco(Path(spec))


def mean_iou(where: dict, win_mask: dict) -> float:
    """Mean IoU with the GT of masks given as instance id → (window, mask); ``where``: id → (image, instance)."""
    from apis.yardsticks import window_iou

    return float(np.mean([window_iou(m, w, where[i][1].mask(where[i][0].height, where[i][0].width))
                          for i, (w, m) in win_mask.items()]))


def ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def main() -> None:
    from apis.oracle import MaskOracle, initial_answers
    from apis.pseudo_masks import auto_pseudo_masks, no_model_masks
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", required=True, help="'builtin' or a COCO json with GT masks; repeat")
    ap.add_argument("--cache", type=Path, default=Path("runs/mask-sources"))
    ap.add_argument("--seed", type=int, default=0, help="seed of P0's random points")
    args = ap.parse_args()

    est, true, rows = [], [], []
    for spec in args.data:
        t = time.time()
        name, ds = load(spec, args.cache)
        answers: dict[int, list[tuple[int, int, int]]] = {}
        for p in initial_answers(ds, MaskOracle(ds), args.seed, k=1):
            answers.setdefault(p.instance_id, []).append((p.x, p.y, p.label))
        masks, choice = auto_pseudo_masks(args.cache / name, ds, {i: [(*a, 0) for a in v] for i, v in answers.items()})
        candidates = no_model_masks(args.cache / name, ds)
        where = {a.id: (im, a) for im in ds.images for a in im.pool}

        truth = {s: mean_iou(where, m) for s, m in candidates.items()}
        auto = mean_iou(where, {i: (m.window, m.mask) for i, m in masks.items()})
        print(f"\n{name}: {len(where)} pool objects, {sum(len(v) for v in answers.values())} P0 answers "
              f"(seed {args.seed}); {time.time() - t:.0f} s")
        print(f"  {'source':<9} {'agree':>6} {'fails box':>9} {'true IoU':>8}")
        for s in choice.scores:
            print(f"  {s.source:<9} {s.accuracy:>6.3f} {s.failing_share:>9.1%} {truth[s.source]:>8.3f}"
                  + ("  <- chosen" if s.source == choice.chosen else ""))
            est.append(s.accuracy)
            true.append(truth[s.source])
        used = ", ".join(f"{s} {n}" for s, n in choice.used.items() if n)
        best = max(truth, key=truth.get)
        print(f"  auto (per object: {used}): true IoU {auto:.3f}; best source by GT: {best}"
              f" ({'chosen' if best == choice.chosen else 'NOT chosen'})")
        rows.append((name, choice.chosen, best, auto, truth))
    if len(est) >= 3:
        rho = float(np.corrcoef(ranks(np.array(est)), ranks(np.array(true)))[0, 1])
        print(f"\nSpearman(agreement with held-out answers, true IoU) over {len(est)} sources x sets: {rho:.3f}")
    print("\n| set | box | ellipse | GrabCut | auto | chosen | best by GT |")
    print("|---|---|---|---|---|---|---|")
    for name, chosen, best, auto, truth in rows:
        print(f"| {name} | {truth['box']:.3f} | {truth['ellipse']:.3f} | {truth['grabcut']:.3f} | {auto:.3f} | "
              f"{chosen} | {best} |")


if __name__ == "__main__":
    main()
