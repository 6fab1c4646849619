"""Which mask should the export keep for an object of a given width? The true IoU of each candidate, by width.

For every pool object of a run's M(step) (answers of steps ≤ step forced into each candidate): the model's
map thresholded (``refine="none"``: a detection's map where the prediction set is empty), the ellipse inscribed
in the box, and what ``refine="auto"`` exports, grouped by the object's width in cells of the mask logits at the
model's test size (:func:`apis.export.logit_cell_px`; the export keeps the map only from
:data:`apis.export.MIN_MAP_CELLS` cells on). An object without any map counts IoU 0 for the map.
Simulation: the run's train json has GT masks. CPU is enough::

    python benchmarks/export_candidates.py runs/real-dsb-auto/seed0/random --step 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run folder (apis run, or an arm of apis compare)")
    ap.add_argument("--step", type=int, required=True)
    ap.add_argument("--bins", default="1.5,2,2.5,3,4,6", help="width bounds in cells")
    args = ap.parse_args()

    from apis.config import load_config
    from apis.data.coco import load_coco
    from apis.export import MIN_MAP_CELLS, export_masks, load_step_model, logit_cell_px, pool_mask_ious
    from apis.geometry import omega
    from apis.store import Store
    from apis.yardsticks import ellipse_mask, force_points, window_iou

    cfg = load_config(args.run / "config.yaml")
    train = load_coco(Path(cfg.data.train))
    with Store.open(args.run / "apis.sqlite") as store, torch.no_grad():
        model = load_step_model(args.run, store, args.step, "A", 1, "cpu")
        answers = {i: [(p.x, p.y, p.label) for p in ps] for i, ps in store.points(max_step=args.step).items()}
        plain = pool_mask_ious(export_masks(model, train, store, "cpu", max_step=args.step, refine="none"), train)
        auto = pool_mask_ious(export_masks(model, train, store, "cpu", max_step=args.step, refine="auto"), train)
    images = train.image_by_id()
    rows = []  # (width in cells, map IoU, ellipse IoU, exported IoU)
    for inst in train.instances():
        if inst.id not in plain:
            continue
        im = images[inst.image_id]
        win = omega(inst.box, im.width, im.height)
        ellipse = force_points(ellipse_mask(inst.box, win), win, answers.get(inst.id, ()))
        rows.append((min(win.width, win.height) / logit_cell_px(model, im), plain[inst.id],
                     window_iou(ellipse, win, inst.mask(im.height, im.width)), auto[inst.id]))
    cells = np.array([r[0] for r in rows])
    ious = np.array([r[1:] for r in rows])
    bounds = [0.0, *(float(v) for v in args.bins.split(",")), float("inf")]
    print(f"{args.run} M{args.step}: {len(rows)} pool objects, median width {np.median(cells):.1f} cells "
          f"(the export keeps the map from {MIN_MAP_CELLS:g})")
    print("| width in cells | objects | map thresholded | ellipse | exported (auto) |")
    print("|---|---|---|---|---|")
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        sel = (cells >= lo) & (cells < hi)
        if sel.any():
            m, e, a = ious[sel].mean(axis=0)
            print(f"| {lo:g}–{hi:g} | {int(sel.sum())} | {m:.3f} | {e:.3f} | {a:.3f} |")
    m, e, a = ious.mean(axis=0)
    print(f"| all | {len(rows)} | {m:.3f} | {e:.3f} | {a:.3f} |")


if __name__ == "__main__":
    main()
