"""Was the judge right? The M0 verdicts on BoxInst's colour-pairwise term, beside both models' val mask AP.

Where M0 tries the term (``loop.p0_pairwise`` from P0, ``loop.box_start_pairwise`` from the boxes alone,
:mod:`apis.box_start`), a run keeps the verdict in its store and the model it did not choose beside M0. This prints,
per seed, the agreement of both models' masks with GrabCut's masks that pass the box check (what the judge saw),
the verdict, and both models' val mask and box AP (what the judge could not see), so each verdict can be checked
against the ground truth.

    python benchmarks/pairwise_trials.py runs/real-pf-j runs/real-pf-j0 runs/real-dsb-j0

Each RUN is an ``apis compare`` folder (its ``seed*/shared`` holds M0) or an ``apis run`` folder; its models are
evaluated on the val split its config.yaml names (``--val`` for another). The evaluations
are cached in each model folder's ``val_ap.json``, so a second call is quick.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def m0_folders(run: Path) -> list[tuple[str, Path]]:
    """(label, folder holding apis.sqlite and models/) of every M0 under ``run``."""
    if (run / "apis.sqlite").is_file():
        return [(run.name, run)]
    return [(f"{run.name}/{d.name}", d / "shared") for d in sorted(run.glob("seed*")) if (d / "shared").is_dir()]


def val_ap(folder: Path, val, batch_size: int) -> tuple[float, float]:
    """(mask AP, box AP) of ``folder``'s model_final.pt on ``val``, cached in its val_ap.json with the split's path."""
    from apis.evaluate import evaluate
    from apis.train import load_model

    cache = folder / "val_ap.json"
    split = str(val.json_path.resolve())
    if cache.is_file():
        d = json.loads(cache.read_text())
        if d.get("val") == split:  # evaluated on another split (--val): evaluate again
            return d["segm"]["AP"], d["bbox"]["AP"]
    r = evaluate(load_model(folder / "model_final.pt"), val, batch_size=batch_size)
    cache.write_text(json.dumps({"val": split, "segm": r.segm, "bbox": r.bbox}))
    return r.segm["AP"], r.bbox["AP"]


def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.2f}" + (f" ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--val", type=Path, help="COCO json of the split to evaluate on (default: each run's data.val)")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    from apis.config import load_config
    from apis.data.coco import load_coco
    from apis.layout import PAIRWISE_PHASE
    from apis.store import Store

    print(f"{'M0':24} {'judge: with / without':>22} {'verdict':>9} {'mask AP with / without':>24} "
          f"{'box AP with / without':>22} {'right?':>7}")
    chosen, without, right = [], [], []
    for run in args.runs:
        val = load_coco(args.val or Path(load_config(run / "config.yaml").data.val))
        for label, folder in m0_folders(run):
            with Store.open(folder / "apis.sqlite") as store:
                verdict = store.phase(PAIRWISE_PHASE)
            if verdict is None:
                print(f"{label:24} no trial (nothing to try, or M0 not trained yet)")
                continue
            models = folder / "models"
            kept = verdict["kept"]
            with_dir = models / "step0" if kept else models / "step0-pairwise-rejected"
            without_dir = models / "step0-without-pairwise" if kept else models / "step0"
            if verdict["maps"] is None:
                print(f"{label:24} nothing could judge the term ({verdict['objects']} of GrabCut's masks pass): "
                      f"{'learnt with it untried' if kept else 'left out untried (the rule before 2026-12-07)'}")
                continue
            (mw, bw), (mo, bo) = val_ap(with_dir, val, args.batch_size), val_ap(without_dir, val, args.batch_size)
            ok = (mw > mo) == kept
            chosen.append(mw if kept else mo)
            without.append(mo)
            right.append(ok)
            print(f"{label:24} {verdict['maps']:>10.1%} / {verdict['without']:<9.1%} "
                  f"{'kept' if kept else 'left out':>9} {mw:>11.2f} / {mo:<10.2f} {bw:>10.2f} / {bo:<9.2f} "
                  f"{'yes' if ok else 'NO':>7}")
    if chosen:
        print(f"\nM0 as judged: {_mean_sd(chosen)} mask AP; without the term always: {_mean_sd(without)}; "
              f"the judge right on {sum(right)} of {len(right)}")


if __name__ == "__main__":
    main()
