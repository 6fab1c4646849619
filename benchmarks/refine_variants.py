"""How the export should turn the model's map into a mask: refinement variants on a finished run.

For each project and step given, loads M(step), predicts the map of every object of the yardsticks' fixed
pool sample (prediction set A; the answers of steps ≤ step as seeds and forced) and scores against the GT
masks each way of making the exported mask from the map, the answers and the image:

- ``threshold``: the map at 0.5 (no image);
- ``grabcut_map``: GrabCut started from the map (the export's refinement before the fallback);
- ``grabcut_box``: GrabCut started from the box (the no-model yardstick ``grabcut_points``);
- ``grabcut_vote``: GrabCut started from the per-pixel majority of the three above;
- ``export``: what ``refine_masks: grabcut`` exports, :func:`apis.export.pick_refinement`: the map's start
  unless the two GrabCuts overlap by less than ``REFINE_MIN_AGREEMENT`` IoU, then the box's.

Then the same pick at other agreement thresholds, to show how much the choice of 0.3 matters. Prints two
tables (mean IoU ± s.e. over the sample; CPU only), e.g.::

    python benchmarks/refine_variants.py demo/seed0/entropy demo/seed1/entropy demo/seed2/entropy --steps 0,3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from apis.batches import image_batches
from apis.config import load_config
from apis.data.coco import load_coco
from apis.export import REFINE_MIN_AGREEMENT, load_step_model, pick_refinement
from apis.geometry import omega
from apis.store import DB_NAME, Store
from apis.yardsticks import force_points, grabcut_mask, pool_sample, window_iou

VARIANTS = ("threshold", "grabcut_map", "grabcut_box", "grabcut_vote", "export")
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def variant_masks(rgb: np.ndarray, box, points, p_map: np.ndarray) -> dict[str, np.ndarray]:
    """Every variant's h×w bool mask over Ω of one object (``rgb`` H×W×3 uint8, ``box`` xyxy pixels,
    ``points`` (x, y, label) answers, ``p_map`` h×w over Ω)."""
    win = omega(tuple(float(v) for v in box), rgb.shape[1], rgb.shape[0])
    points = list(points)
    thr = force_points(p_map > 0.5, win, points)
    from_map = grabcut_mask(rgb, box, points, prior=p_map)
    from_box = grabcut_mask(rgb, box, points)
    vote = force_points((thr.astype(int) + from_map + from_box) >= 2, win, points)
    return {"threshold": thr, "grabcut_map": from_map, "grabcut_box": from_box,
            "grabcut_vote": grabcut_mask(rgb, box, points, prior=vote.astype(np.float32)),
            "export": pick_refinement(from_map, from_box)[0]}


def measure(project: Path, step: int, sample_size: int) -> dict[str, list[float]]:
    """Variant (and ``pick@T`` per threshold T) → IoU per sampled object."""
    cfg = load_config(project / "config.yaml")
    dataset = load_coco(Path(cfg.data.train))
    sample = set(pool_sample([a.id for a in dataset.instances()], sample_size).instance_ids)
    images = [im for im in dataset.images if any(a.id in sample for a in im.pool)]
    ious: dict[str, list[float]] = {v: [] for v in (*VARIANTS, *(f"pick@{t}" for t in THRESHOLDS))}
    with Store.open(project / DB_NAME) as store:
        answers = {i: [(p.x, p.y, p.label) for p in ps] for i, ps in store.points(max_step=step).items()}
        model = load_step_model(project, store, step, "A", 1, "cpu")
    model.eval()
    with torch.no_grad():
        for batch in image_batches(dataset, "cpu", 8, images=images, targets=True):
            sets = model.prediction_sets(batch.tensors, batch.model_targets())
            for b, im in enumerate(batch.images):
                rgb = (batch.tensors[b] * 255).round().byte().permute(1, 2, 0).numpy()
                for g, inst in enumerate(im.pool):
                    if inst.id not in sample:
                        continue
                    p_map = sets[b][g].float().mean(dim=0).numpy()
                    gt = inst.mask(im.height, im.width)
                    win = batch.targets[b]["windows"][g]
                    masks = variant_masks(rgb, inst.box, answers.get(inst.id, ()), p_map)
                    for name, mask in masks.items():
                        ious[name].append(window_iou(mask, win, gt))
                    for t in THRESHOLDS:
                        mask = pick_refinement(masks["grabcut_map"], masks["grabcut_box"], t)[0]
                        ious[f"pick@{t}"].append(window_iou(mask, win, gt))
    return ious


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("projects", nargs="+", type=Path, help="run folders (apis run / a strategy of apis compare)")
    ap.add_argument("--steps", default="0,3")
    ap.add_argument("--sample", type=int, default=300, help="pool objects (the yardsticks' fixed sample)")
    args = ap.parse_args(argv)
    results = {(p, int(s)): measure(p, int(s), args.sample) for s in args.steps.split(",") for p in args.projects}

    def cell(v: list[float]) -> str:
        return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) / np.sqrt(len(v)):.3f}"

    print(f"export = pick at REFINE_MIN_AGREEMENT {REFINE_MIN_AGREEMENT}\n")
    print("| project | step | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for (p, s), ious in results.items():
        print(f"| {p} | {s} | " + " | ".join(cell(ious[v]) for v in VARIANTS) + " |")
    print("\n| project | step | " + " | ".join(f"pick@{t}" for t in THRESHOLDS) + " |")
    print("|---|---|" + "---|" * len(THRESHOLDS))
    for (p, s), ious in results.items():
        print(f"| {p} | {s} | " + " | ".join(f"{np.mean(ious[f'pick@{t}']):.3f}" for t in THRESHOLDS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
