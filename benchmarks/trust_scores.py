"""Are the export's trust scores worth sorting by? Spearman rank correlation between ``apis_score`` and the
true IoU of each exported pool mask (simulation: the train json has GT masks).

    python benchmarks/trust_scores.py demo/seed0/entropy --step 3
    python benchmarks/trust_scores.py RUN --step 2 --refine none

Prints the correlation, the mean IoU of the least trusted tenth against the rest, and how many objects
the review list's first 10% holds of the worst 10% by true IoU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from apis.export import _ranks  # ties share their mean rank, as the loop's trust_rank_correlation

    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run folder (apis run, or an arm of apis compare)")
    ap.add_argument("--step", type=int, required=True)
    ap.add_argument("--refine", default=None, help="none or grabcut (default: the run's config)")
    args = ap.parse_args()

    from apis.config import load_config
    from apis.data.coco import load_coco
    from apis.export import _mask_iou, export_masks, load_step_model
    from apis.store import Store

    cfg = load_config(args.run / "config.yaml")
    if not cfg.data.train:
        raise SystemExit(f"{args.run / 'config.yaml'}: data.train is empty; a run records its train json there")
    train = load_coco(Path(cfg.data.train))
    refine = args.refine or cfg.loop.refine_masks
    with Store.open(args.run / "apis.sqlite") as store:
        model = load_step_model(args.run, store, args.step, cfg.loop.prediction_set, cfg.loop.ensemble_size, "cpu")
        result = export_masks(model, train, store, "cpu", cfg.loop.prediction_set, max_step=args.step, refine=refine)
    anns = {a["id"]: a for a in result.coco["annotations"]}
    images = train.image_by_id()
    score, iou = [], []
    for inst in train.instances():
        a = anns[inst.id]
        im = images[inst.image_id]
        score.append(a.get("apis_score", 0.0))
        iou.append(_mask_iou(a["segmentation"], inst.segmentation, im.height, im.width) if "segmentation" in a else 0.0)
    score, iou = np.array(score), np.array(iou)
    k = max(1, len(iou) // 10)
    low = np.argsort(score, kind="stable")[:k]
    worst = set(np.argsort(iou, kind="stable")[:k].tolist())
    print(f"{args.run} step {args.step}, refine {refine}, {len(iou)} pool objects, pool mask IoU {iou.mean():.3f}")
    print(f"  Spearman(apis_score, true IoU) = {spearman(score, iou):.3f}")
    print(f"  mean IoU of the least trusted 10%: {iou[low].mean():.3f}; of the rest: "
          f"{np.delete(iou, low).mean():.3f}")
    print(f"  the least trusted 10% hold {len(worst & set(low.tolist()))} of the {k} worst objects by true IoU")
    # A candidate from the same export: the score times the share of its answers the map got right before forcing.
    agree = np.array([1.0 if anns[i.id].get("apis_points_agree") is None else anns[i.id]["apis_points_agree"]
                      for i in train.instances()])
    for name, alt in (("score x points agree", score * agree),):
        low = np.argsort(alt, kind="stable")[:k]
        print(f"  {name}: Spearman {spearman(alt, iou):.3f}; least trusted 10% IoU {iou[low].mean():.3f}, holding "
              f"{len(worst & set(low.tolist()))} of the {k} worst")


if __name__ == "__main__":
    main()
