"""Do a strategy's questions land where the pseudo masks are wrong? Per arm and step of a finished run.

Beside the points, every model of the tiny preset learns from pseudo masks (``loop.pseudo_masks``: GrabCut's cut, the
ellipse, ...; :mod:`apis.pseudo_masks`), its *teacher*. An answer that agrees with the teacher at its pixel tells the
next model what it was already taught there; one that contradicts it corrects the teacher. This prints, for each
arm and step s ≥ 1 of a run, the share of step s's answers that contradict the pseudo masks M(s−1) learnt from (made
again as the loop made them: P(s−1)'s answers, the sources judged on the answers at random points), beside the share
that M(s−1) itself got wrong (the run's ``misclassified`` column) and the val mask AP:

    python benchmarks/teacher_contradiction.py runs/demo
    python benchmarks/teacher_contradiction.py runs/real-pf-j --seeds 0

RUN is an ``apis compare`` folder (``seed*/<strategy>/apis.sqlite``); its pool is the train split its config.yaml
names (``--train`` for another path to the same file). GrabCut's cuts are read from ``RUN/cache`` where the run
made them (else cut again: about 60 ms an object). Supported teachers: ``auto`` (the tiny preset's) and the named
no-model sources; ``refined`` (the previous model's export) would need every model's export again and is refused.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def teacher_label(pseudo, iid: int, x: int, y: int) -> bool | None:
    """The teacher's label at pixel (x, y) of instance ``iid`` (outside its window: background); None: no mask."""
    m = pseudo.get(iid)
    if m is None:
        return None
    w = m.window
    if not (w.x0 <= x < w.x1 and w.y0 <= y < w.y1):
        return False
    return bool(m.mask[y - w.y0, x - w.x0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--seeds", default="", help="comma-separated seeds (default: every seed folder)")
    ap.add_argument("--train", type=Path, help="the pool's COCO json (default: the run's data.train)")
    args = ap.parse_args()

    from apis.config import load_config
    from apis.data.coco import load_coco
    from apis.names import RANDOM_STRATEGY
    from apis.pseudo_masks import auto_pseudo_masks, training_pseudo_masks
    from apis.store import Store

    cfg = load_config(args.run / "config.yaml")
    source = cfg.loop.pseudo_masks
    if source == "refined":
        raise SystemExit(f"{args.run}: loop.pseudo_masks is 'refined' (the previous model's export): not supported; "
                         "this script remakes no-model teachers only")
    pool = load_coco(args.train or Path(cfg.data.train))
    results = {}
    if (args.run / "results.csv").is_file():
        with open(args.run / "results.csv") as f:
            results = {(r["strategy"], r["seed"], r["step"]): r for r in csv.DictReader(f)}
    seeds = [f"seed{s}" for s in args.seeds.split(",")] if args.seeds else \
        sorted(d.name for d in args.run.glob("seed*") if d.is_dir())

    print(f"teacher: loop.pseudo_masks {source}; pool {pool.json_path}")
    print(f"{'seed':>5} {'arm':>10} {'step':>4} {'answers':>7} {'yes':>6} {'contradict teacher':>18} "
          f"{'M(s-1) wrong':>12} {'val mask AP':>11}")
    for seed in seeds:
        arms = sorted(p.parent.name for p in (args.run / seed).glob("*/apis.sqlite") if p.parent.name != "shared")
        for arm in arms:
            with Store.open(args.run / seed / arm / "apis.sqlite") as store:
                points = store.points()
            for step in sorted({p.step for ps in points.values() for p in ps} - {0}):
                before = {i: [(p.x, p.y, p.label) for p in ps if p.step < step] for i, ps in points.items()}
                if source == "auto":
                    judged = {i: [(p.x, p.y, p.label) for p in ps if p.step < step and p.strategy == RANDOM_STRATEGY]
                              for i, ps in points.items()}
                    pseudo, _ = auto_pseudo_masks(args.run / "cache", pool, before, judged=judged)
                else:
                    pseudo = training_pseudo_masks(args.run / "cache", pool, source, before)
                asked = [(i, p) for i, ps in points.items() for p in ps if p.step == step]
                labels = [(teacher_label(pseudo, i, p.x, p.y), bool(p.label)) for i, p in asked]
                taught = [(t, a) for t, a in labels if t is not None]
                if not taught:
                    continue
                contra = sum(t != a for t, a in taught) / len(taught)
                yes = sum(a for _, a in labels) / len(labels)
                r = results.get((arm, seed.removeprefix("seed"), str(step)), {})
                wrong = f"{float(r['misclassified']):.1%}" if r.get("misclassified") else "-"
                print(f"{seed.removeprefix('seed'):>5} {arm:>10} {step:>4} {len(labels):>7} {yes:>6.1%} "
                      f"{contra:>18.1%} {wrong:>12} {r.get('AP', '-'):>11}")


if __name__ == "__main__":
    main()
