"""What each exported pool mask's trust score could be drawn from, beside its true IoU: one CSV row per object per
step per arm of a comparison, from the run's own models, exported exactly as the loop measures it
(:meth:`apis.step_measures.StepMeasures.pool_iou`: the same sample, colour evidence and GrabCut cuts).

    python benchmarks/trust_features.py runs/real-dsb --out runs/real-dsb/trust_features.csv
    python benchmarks/trust_features.py runs/demo --seeds 0 --steps 0,3
    PYTHONPATH=../apis-19fa5c3/src python benchmarks/trust_features.py runs/demo --out before.csv  # older code

The columns (Ω: the pixels whose centres lie in the box; M: the exported mask; E: the ellipse inscribed in the
box; G: GrabCut's cut from the box with the answers, where the export cuts; p: the mean map of the prediction
set, 0 without one): ``iou`` the exported mask's true IoU; ``score`` the ``apis_score`` the code gives today, with
the ``refinement`` and ``source`` of the mask; the evidence the export held (``weight`` the map's before the
resolution check; ``map_weight``, ``shape_fit``, ``cut_fit`` as in :mod:`apis.export.trust`); pixel sums over
Ω: ``n_omega``, ``n_m``, ``n_e``, ``n_g``, ``m_and_e``, ``m_and_g``, ``p_sum``, ``p_m`` (Σ_M p), ``p_e``,
``p_g``, ``h_sum`` (Σ binary entropy of p, bits), ``var_sum`` (Σ of the variance across the prediction set's K
maps). ``benchmarks/trust_rank.py`` ranks the ``score`` of such files.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

COLUMNS = ("seed", "arm", "step", "id", "iou", "score", "refinement", "source", "weight", "map_weight", "shape_fit",
           "cut_fit", "points", "points_agree",
           "n_omega", "n_m", "n_e", "n_g", "m_and_e", "m_and_g", "p_sum", "p_m", "p_e", "p_g", "h_sum", "var_sum")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("compare", type=Path, help="a folder of apis compare (or apis demo --out)")
    ap.add_argument("--out", type=Path, default=None, help="CSV (default: COMPARE/trust_features.csv)")
    ap.add_argument("--seeds", default=None, help="comma-separated (default: the config's)")
    ap.add_argument("--steps", default=None, help="comma-separated (default: 0..loop.steps)")
    ap.add_argument("--pixels", type=Path, default=None,
                    help="also write each object's maps over Ω here (.npz: p as uint8 /255, M, E, G as bool, the "
                         "answers as rows x, y, label in Ω's frame): for candidates the sums cannot express")
    args = ap.parse_args()

    import apis.export.masks as export_masks_module
    import apis.step_measures as measures_module
    from apis.config import load_config
    from apis.data.records import decode_segmentation
    from apis.experiment import review_arm_name
    from apis.export import pool_mask_ious
    from apis.export.command import model_for_step
    from apis.loop import ActiveRun, mask_oracle
    from apis.splits import run_splits
    from apis.train import load_model
    from apis.yardsticks import ellipse_mask

    root = args.compare
    cfg = load_config(root / "config.yaml")
    cfg, train_set, val_set = run_splits(cfg, root)
    oracle, gt_masks = mask_oracle(train_set)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(cfg.loop.seeds)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else list(range(cfg.loop.steps + 1))
    boxes = {a.id: a.box for a in train_set.instances()}

    # What the export sees per object, caught on the way (the loop's own functions, wrapped).
    seen: dict[int, dict] = {}
    pixels: dict[int, dict[str, np.ndarray]] = {}
    real_instance_map, real_finish = export_masks_module.instance_map, export_masks_module.finish_instance
    real_export = measures_module.export_masks

    def instance_map(probs, detections, inst, classes, win):
        out = real_instance_map(probs, detections, inst, classes, win)
        var = float(probs.float().var(dim=0, unbiased=False).sum()) if probs.shape[0] > 1 else 0.0
        seen[inst.id] = {"var_sum": var}
        return out

    def finish_instance(inst, image, win, p_map, weight, source, answers, k, **kw):
        exp, rle = real_finish(inst, image, win, p_map, weight, source, answers, k, **kw)
        row = seen.setdefault(inst.id, {"var_sum": 0.0})
        p = np.zeros((win.height, win.width)) if p_map is None else p_map.double().numpy()
        m = np.zeros_like(p, dtype=bool) if rle is None else \
            decode_segmentation(rle, image.height, image.width)[win.y0 : win.y1, win.x0 : win.x1].astype(bool)
        e = ellipse_mask(boxes[inst.id], win)
        g = kw.get("box_cut")
        q = np.clip(p, 1e-6, 1 - 1e-6)
        if args.pixels is not None:
            pixels[inst.id] = {"p": np.round(p * 255).astype(np.uint8), "m": m, "e": e,
                               **({} if g is None else {"g": np.asarray(g, dtype=bool)}),
                               "a": np.array([(x - win.x0, y - win.y0, lab) for x, y, lab in answers],
                                             dtype=np.int32).reshape(-1, 3)}
        row.update(
            score=exp.score, refinement=exp.refinement or "map", source=exp.source, weight=weight,
            # getattr: the code before 2026-12-07 (run from its checkout for a "before" file) lacks these fields
            map_weight=getattr(exp, "map_weight", None), shape_fit=getattr(exp, "shape_fit", None),
            cut_fit=getattr(exp, "cut_fit", None), points=exp.points,
            points_agree=exp.points_agree, n_omega=p.size, n_m=int(m.sum()), n_e=int(e.sum()),
            n_g=None if g is None else int(g.sum()), m_and_e=int((m & e).sum()),
            m_and_g=None if g is None else int((m & g).sum()), p_sum=float(p.sum()), p_m=float(p[m].sum()),
            p_e=float(p[e].sum()), p_g=None if g is None else float(p[g].sum()),
            h_sum=float(-(q * np.log2(q) + (1 - q) * np.log2(1 - q)).sum()))
        return exp, rle

    def export_masks(*a, **kw):
        result = real_export(*a, **kw)
        ious = pool_mask_ious(result, train_set, kw.get("instance_ids"))
        for i, v in ious.items():
            seen.setdefault(i, {})["iou"] = v
        return result

    export_masks_module.instance_map = instance_map
    export_masks_module.finish_instance = finish_instance
    measures_module.export_masks = export_masks

    out = args.out or root / "trust_features.csv"
    saved: dict[str, np.ndarray] = {}
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for seed in seeds:
            arms = [("shared", "random")] + [(review_arm_name(s, cfg.loop.review.per_step), s)
                                             for s in cfg.loop.strategies]
            for arm, strategy in arms:
                folder = root / f"seed{seed}" / arm
                run = ActiveRun(folder, cfg, train_set, val_set, strategy, seed, oracle, gt_masks,
                                report=lambda _m: None, cache_dir=root / "cache")
                with run.open_store() as store:
                    for step in steps:
                        if (arm == "shared") != (step == 0):
                            continue
                        t0 = time.time()
                        seen.clear()
                        pixels.clear()
                        model = run.selection_model(store, step, load_model(model_for_step(folder, store, step),
                                                                            run.device))
                        got = run.measures.pool_iou(model, store, step)
                        n = 0
                        for i, row in seen.items():
                            if "score" not in row or "iou" not in row:
                                continue
                            writer.writerow({"seed": seed, "arm": arm, "step": step, "id": i, **row})
                            for name, arr in pixels.get(i, {}).items():
                                saved[f"{seed}/{arm}/{step}/{i}/{name}"] = arr
                            n += 1
                        f.flush()
                        print(f"seed {seed} {arm} P{step}: {n} objects, pool IoU {got['pool_iou']}, "
                              f"Spearman {got['trust_spearman']}, worst tenth {got['trust_worst_tenth']} "
                              f"({time.time() - t0:.0f} s)", flush=True)
    if args.pixels is not None:
        np.savez_compressed(args.pixels, **saved)
        print(f"wrote {args.pixels}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
