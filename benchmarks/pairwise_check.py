"""The box-only start's judge of BoxInst's pairwise term (apis.box_start) on models trained elsewhere: each model's
thresholded masks against GrabCut's masks of the boxes that pass the box check, beside the shape's; with --gt, each
one's agreement with the true masks as well, over the same objects (how well the judge ranks models).

    python benchmarks/pairwise_check.py --train data/pennfudan/train/annotations.json \\
        --cache runs/recipe-pennfudan/cache runs/recipe-pennfudan/*/seed0/model/model_final.pt

``--cache``: where GrabCut's masks of the pool are (or are cut to: about 60 ms an object); a mask_recipe.py run's
OUT/cache holds them. Each model is tested at the size its checkpoint names (mask_recipe.py's: 160).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from apis.box_start import model_masks, pairwise_judge
from apis.data.coco import load_coco
from apis.mask_checks import cross_agreement
from apis.oracle import MaskOracle
from apis.train import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="model_final.pt files")
    ap.add_argument("--train", type=Path, required=True, help="the COCO json the models' pool comes from")
    ap.add_argument("--cache", type=Path, required=True, help="GrabCut's cached masks of the pool")
    ap.add_argument("--shape", default="ellipse", choices=["ellipse", "box"], help="the shape the models learnt from")
    ap.add_argument("--gt", action="store_true", help="also each model's pixel agreement with the true masks")
    args = ap.parse_args()
    judge = pairwise_judge(args.cache, load_coco(args.train), args.shape)
    print(f"{args.train}: {len(judge.cuts)} GrabCut masks pass the box check; the {judge.shape} agrees "
          f"{judge.bar:.1%} with them" if judge.ready else f"{args.train}: too few GrabCut masks pass to judge")
    if not judge.ready:
        return
    truth = {}
    if args.gt:
        oracle = MaskOracle(judge.dataset)  # names the instance and the fix where one has no mask
        truth = {i: oracle.mask(i)[win.y0:win.y1, win.x0:win.x1].astype(bool) for i, (win, _) in judge.cuts.items()}
        cut_gt = np.mean([(cut == truth[i]).mean() for i, (_, cut) in judge.cuts.items()])
        print(f"GrabCut's passing masks agree {cut_gt:.1%} with the true masks")
    print(f"{'model':70s}  cuts" + ("    GT" if args.gt else ""))
    for path in args.models:
        model = load_model(path)
        maps = model_masks(model, judge)
        line = f"{str(path):70s}  {cross_agreement(maps, judge.cuts).share:5.1%}"
        if args.gt:
            line += f"  {np.mean([(maps[i][1] == truth[i]).mean() for i in judge.cuts]):5.1%}"
        print(line)


if __name__ == "__main__":
    main()
