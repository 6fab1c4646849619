"""Which evidence ranks the exported masks by their true IoU? Candidate trust scores on one model, side by side.

For every pool object the export (``refine="auto"``, the answers forced) is compared with the true mask, and
each candidate score with that IoU (Spearman's rank correlation; and how many of the worst tenth the least
trusted tenth holds, chance 10%). The candidates use only what the export knows without GT:

* ``belief``: the export's ``apis_score`` (:mod:`apis.export.trust`; until 2026-12-07 the model's belief in the mask
  exported, or for a mask GrabCut cut the IoU of its two cuts, :func:`apis.export.cut_agreement`);
* ``vs map``: IoU of the exported mask with the model's map thresholded;
* ``vs source``: IoU of the exported mask with the no-model source the answers chose for the set
  (:func:`apis.pseudo_masks.judge_no_model_sources`: GrabCut from the box, the ellipse or the box);
* ``map vs source``: IoU of the two independent opinions, the map and the chosen source, whatever was exported;
* ``map fills its box``: the share of the box's rows and columns the thresholded map reaches (BoxInst's
  projection: a tight box's object reaches every row and column of it), so a map that lost a limb or broke
  in two scores less;
* products of these with the belief.

On a model trained by ``benchmarks/mask_recipe.py`` (M0 from P0's answers, seed ``--seed``)::

    python benchmarks/trust_candidates.py runs/recipe-pennfudan/auto/seed0/model/model_final.pt \\
        --train data/pennfudan/train/annotations.json
    python benchmarks/trust_candidates.py runs/recipe-builtin/auto/seed0/model/model_final.pt \\
        --train runs/recipe-builtin/data/train/annotations.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from apis.export import _ranks

    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def caught(score: np.ndarray, iou: np.ndarray, share: float = 0.1) -> float:
    k = max(1, int(len(iou) * share))
    low = set(np.argsort(score, kind="stable")[:k].tolist())
    return len(low & set(np.argsort(iou, kind="stable")[:k].tolist())) / k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a model_final.pt")
    ap.add_argument("--train", type=Path, required=True, help="the pool's COCO json (with GT masks)")
    ap.add_argument("--seed", type=int, default=0, help="P0's answers: one random point per object")
    ap.add_argument("--cache", type=Path, default=None, help="GrabCut cache folder (default: beside the model)")
    ap.add_argument("--dump", type=Path, default=None, help="write one CSV row per object (the features and the IoU)")
    args = ap.parse_args()

    from pycocotools import mask as mask_utils

    from apis.data.coco import load_coco
    from apis.export import export_masks
    from apis.geometry import omega
    from apis.pseudo_masks import judge_no_model_sources
    from apis.supervision import random_points
    from apis.train import load_model
    from apis.yardsticks import force_points

    train = load_coco(args.train)
    answers = random_points(train, 1, args.seed)
    cache = args.cache or args.model.parent.parent.parent.parent / "cache"
    choice, free = judge_no_model_sources(cache, train, answers)
    source = choice.chosen
    with torch.no_grad():
        model = load_model(args.model, "cpu")
        auto = export_masks(model, train, answers, refine="auto")
        plain = export_masks(model, train, answers, refine="none")
    exp_anns = {a["id"]: a for a in auto.coco["annotations"]}
    map_anns = {a["id"]: a for a in plain.coco["annotations"]}
    images = train.image_by_id()

    def window(ann: dict | None, win) -> np.ndarray:
        if ann is None or "segmentation" not in ann:
            return np.zeros((win.height, win.width), dtype=bool)
        return mask_utils.decode(ann["segmentation"]).astype(bool)[win.y0 : win.y1, win.x0 : win.x1]

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        union = np.logical_or(a, b).sum()
        return float(np.logical_and(a, b).sum() / union) if union else 1.0

    def fill(mask: np.ndarray) -> float:
        return float(mask.any(axis=1).mean() + mask.any(axis=0).mean()) / 2 if mask.size else 0.0

    # crowd: share of the box under other boxes; size: sqrt of the box's area; fills: of the map and the export
    rows, crowd, size, map_fill, exp_fill = [], [], [], [], []
    for inst in train.instances():
        im = images[inst.image_id]
        win = omega(inst.box, im.width, im.height)
        truth = inst.mask(im.height, im.width).astype(bool)[win.y0 : win.y1, win.x0 : win.x1]
        exported = window(exp_anns.get(inst.id), win)
        the_map = window(map_anns.get(inst.id), win)
        src = force_points(free[source][inst.id][1], win, answers.get(inst.id, ()))
        others = np.zeros((win.height, win.width), dtype=bool)
        for o in im.pool:
            if o.id != inst.id:
                x0, y0, x1, y1 = o.box
                others[max(0, int(y0) - win.y0) : max(0, int(np.ceil(y1)) - win.y0),
                       max(0, int(x0) - win.x0) : max(0, int(np.ceil(x1)) - win.x0)] = True
        crowd.append(float(others.mean()))
        map_fill.append(fill(the_map))
        exp_fill.append(fill(exported))
        size.append(float(np.sqrt(win.width * win.height)))
        rows.append((iou(exported, truth), exp_anns[inst.id].get("apis_score", 0.0), iou(exported, the_map),
                     iou(exported, src), iou(the_map, src), exp_anns[inst.id].get("apis_refinement") or "map"))
    truth = np.array([r[0] for r in rows])
    belief, vs_map, vs_src, map_src = (np.array([r[k] for r in rows]) for k in (1, 2, 3, 4))
    kinds = [r[5] for r in rows]
    print(f"{args.model}: {len(rows)} pool objects, exported pool IoU {truth.mean():.3f}; chosen source {source}; "
          "exported: " + ", ".join(f"{k} {kinds.count(k)}" for k in sorted(set(kinds))))
    # Agreement relative to the pool's typical agreement: a shape is never the object, so only an object
    # agreeing much less than its peers is suspect.
    rel_src = np.minimum(1.0, vs_src / max(float(np.median(vs_src)), 1e-6))
    rel_map_src = np.minimum(1.0, map_src / max(float(np.median(map_src)), 1e-6))
    cands = {
        "apis_score (belief; cut agreement for cut masks)": belief,
        "vs map": vs_map,
        "vs source": vs_src,
        "map vs source": map_src,
        "belief x map vs source": belief * map_src,
        "belief x vs source": belief * vs_src,
        "mean(belief, map vs source)": (belief + map_src) / 2,
        "min(belief, map vs source)": np.minimum(belief, map_src),
        "belief x vs source²": belief * vs_src**2,
        "sqrt(belief x vs source)": np.sqrt(belief * vs_src),
        "belief x vs source / median (capped 1)": belief * rel_src,
        "belief x (vs source / median)²": belief * rel_src**2,
        "belief x map vs source / median": belief * rel_map_src,
        "1 - crowd (boxes only)": 1.0 - np.array(crowd),
        "size (boxes only)": np.array(size),
        "belief x (1 - crowd)": belief * (1.0 - np.array(crowd)),
        "belief x (1 - crowd) x map vs source / median": belief * (1.0 - np.array(crowd)) * rel_map_src,
        "map fills its box": np.array(map_fill),
        "export fills its box": np.array(exp_fill),
        "belief x map fill": belief * np.array(map_fill),
        "belief x map fill²": belief * np.array(map_fill) ** 2,
        "belief x map fill x (1 - crowd)": belief * np.array(map_fill) * (1.0 - np.array(crowd)),
        "map fill x map vs source": np.array(map_fill) * map_src,
    }
    if args.dump:
        import csv

        with open(args.dump, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["iou", "belief", "vs_map", "vs_source", "map_vs_source", "exported", "crowd", "size",
                        "map_fill"])
            for r, c, z, f in zip(rows, crowd, size, map_fill, strict=True):
                w.writerow([*(round(v, 4) for v in r[:5]), r[5], round(c, 4), round(z, 1), round(f, 4)])
    print("| candidate | Spearman with true IoU | worst tenth caught |\n|---|---|---|")
    for name, s in cands.items():
        print(f"| {name} | {spearman(s, truth):.3f} | {caught(s, truth):.0%} |")


if __name__ == "__main__":
    main()
