"""Does testing at a larger size help small objects? One trained model at several test sizes, same weights.

For each test size (short side; the long-side cap grows in proportion): val mask and box AP, and the pool IoU
of the export with P0's answers (one random answered point per object, seed ``--seed``), ``refine="auto"`` and
the map alone, with how many objects the export drew from the map and from the ellipse (it keeps the map only
for objects at least :data:`apis.export.MIN_MAP_CELLS` logit cells across). The tiny preset picks the size
itself (:func:`apis.data.sizes.fitted_test_size`), printed first. On a model from ``benchmarks/mask_recipe.py``::

    python benchmarks/test_sizes.py runs/recipe-dsb100/auto/seed0/model/model_final.pt \\
        --train data/dsb100/train/annotations.json --val data/dsb100/val/annotations.json --sizes 160,224,288,320
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a model_final.pt")
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--sizes", default="160,224,288,320")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from apis.config import load_config
    from apis.data.coco import load_coco
    from apis.data.sizes import box_objects, fitted_test_size, median_side_at
    from apis.evaluate import evaluate
    from apis.export import export_masks, pool_mask_iou
    from apis.supervision import random_points
    from apis.train import load_model

    train, val = load_coco(args.train), load_coco(args.val)
    answers = random_points(train, 1, args.seed)
    model = load_model(args.model, "cpu")
    base, base_max = model.cfg.test_min_size, model.cfg.max_size
    objects = box_objects(train)
    tiny = load_config().model
    print(f"{args.model}: trained at {list(model.cfg.train_min_sizes)}, tested at {base} (max {base_max}); median box "
          f"{median_side_at(objects, base, base_max):.1f} px across there; the tiny preset tests at "
          f"{fitted_test_size(objects, tiny.test_min_size, tiny.max_size, tiny.max_test_upscale)[0]}")
    print("| test size | val mask AP | val box AP | pool IoU, export (auto) | pool IoU, map alone | map / ellipse "
          "| export s |\n|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        model.cfg.test_min_size, model.cfg.max_size = size, round(base_max * size / base)
        t0 = time.time()
        with torch.no_grad():
            auto = export_masks(model, train, answers, refine="auto")
            seconds = time.time() - t0
            plain = export_masks(model, train, answers, refine="none")
            ev = evaluate(model, val, batch_size=8)
        kinds = [a.get("apis_refinement") for a in auto.coco["annotations"] if "segmentation" in a]
        print(f"| {size} | {ev.segm['AP']:.2f} | {ev.bbox['AP']:.2f} | {pool_mask_iou(auto, train):.3f} | "
              f"{pool_mask_iou(plain, train):.3f} | {kinds.count(None)} / {kinds.count('ellipse')} | {seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
