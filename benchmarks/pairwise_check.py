"""The box-only start's check of BoxInst's pairwise term (apis.box_start) on models trained elsewhere: each model's
thresholded masks against GrabCut's masks of the boxes that pass the box check, beside the shape's.

    python benchmarks/pairwise_check.py --train data/pennfudan/train/annotations.json \\
        --cache runs/recipe-pennfudan/cache runs/recipe-pennfudan/*/seed0/model/model_final.pt

``--cache``: where GrabCut's masks of the pool are (or are cut to: about 60 ms an object); a mask_recipe.py run's
OUT/cache holds them. Each model is tested at the size its checkpoint names (mask_recipe.py's: 160).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apis.box_start import check_pairwise, pairwise_judge
from apis.data.coco import load_coco
from apis.train import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="model_final.pt files")
    ap.add_argument("--train", type=Path, required=True, help="the COCO json the models' pool comes from")
    ap.add_argument("--cache", type=Path, required=True, help="GrabCut's cached masks of the pool")
    ap.add_argument("--shape", default="ellipse", choices=["ellipse", "box"], help="the shape the models learnt from")
    args = ap.parse_args()
    judge = pairwise_judge(args.cache, load_coco(args.train), args.shape)
    print(f"{args.train}: {len(judge.cuts)} GrabCut masks pass the box check; the {judge.shape} agrees "
          f"{judge.bar:.1%} with them" if judge.ready else f"{args.train}: too few GrabCut masks pass to judge")
    if not judge.ready:
        return
    print(f"{'model':70s}  agree  kept")
    for path in args.models:
        verdict = check_pairwise(load_model(path), judge)
        print(f"{str(path):70s}  {verdict.maps:5.1%}  {'yes' if verdict.kept else 'no'}")


if __name__ == "__main__":
    main()
