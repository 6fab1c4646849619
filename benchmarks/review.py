"""Is reviewing masks worth its time? Pool mask IoU against annotation hours for Entropy with a simulated
reviewer judging 10% of the pool each step, against Entropy alone, compared at equal hours; and how well the
trust score ranks the masks (Spearman's correlation of ``apis_score`` with the true IoU).

Two `apis compare` passes into one folder, so per seed both arms start from the same P0 and M0:

* ``entropy``: Entropy alone, for more steps than the reviewed arm (``--plain-steps``; by default enough for
  its hours to reach the reviewed arm's last step even at 6 s a decision), so the reviewed arm's every step
  can be compared with the plain curve at the same hours (linear interpolation per seed, never
  extrapolation).
* ``entropy+reviewN``: Entropy with ``loop.review: {per_step: N}``, N = ``--share`` (10%) of the pool: after
  each step the N least trusted masks not yet accepted are judged against their GT masks (accept at IoU ≥
  0.75, ``loop.review.accept_iou``); an accepted mask is final, a rejected object gets
  ``loop.review_points`` (2) extra points at the next step.

Hours are the answers' (0.9 s a point) plus the review decisions' at ``cost.review_seconds`` = 3 s, an
assumption; the tables also price a decision at 1.5 s and 6 s. Pool IoU is measured over every pool object
(``loop.yardstick_objects: 0``; the no-model yardsticks are left out, they are the same for both arms).

    python benchmarks/review.py --out runs/review                          # built-in set, tiny preset, seeds 0,1,2
    python benchmarks/review.py --out /tmp/review-smoke --config small.yaml --seeds 0 --steps 1
    python benchmarks/review.py --out runs/review --analyse-only           # the tables of a finished run

``--config`` is applied over the tiny preset (e.g. fewer iterations or a smaller built-in set, for a check of
the script); its loop.strategies, steps and seeds are replaced by the benchmark's. Resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

ARM = "entropy"
COSTS = (1.5, 3.0, 6.0)  # seconds a review decision, the middle one the config's default


def datasets(cfg, out: Path):
    """The config's train and val sets (the built-in set, written under ``out/data``, when it names none) and
    the config with their absolute paths, as ``apis compare`` records them."""
    from apis.splits import run_splits

    return run_splits(cfg, out)


def plain_steps_for(steps: int, share: float, review_points: int, point_s: float, review_s: float) -> int:
    """Steps the plain arm needs so that its hours reach the reviewed arm's at ``steps``: each reviewed step adds
    at most share · (review_s + review_points · point_s) seconds per pool object to the answers' point_s."""
    extra = steps * share * (review_s + review_points * point_s) / point_s
    return steps + math.ceil(extra - 1e-9)


def run(args) -> None:
    from apis.config import ReviewConfig, load_config
    from apis.experiment import compare

    cfg = load_config(args.config)
    cfg, train_set, val_set = datasets(cfg, args.out)
    pool = len(train_set.instances())
    n = max(1, round(args.share * pool))
    seeds = [int(s) for s in args.seeds.split(",")]
    plain_steps = args.plain_steps or plain_steps_for(args.steps, args.share, cfg.loop.review_points,
                                                      cfg.cost.point_s, max(COSTS))
    loop = dataclasses.replace(cfg.loop, strategies=[ARM], seeds=seeds, yardstick_objects=0)
    plain = dataclasses.replace(cfg, loop=dataclasses.replace(loop, steps=plain_steps, review=ReviewConfig(0)))
    reviewed = dataclasses.replace(cfg, loop=dataclasses.replace(
        loop, steps=args.steps, review=dataclasses.replace(cfg.loop.review, per_step=n)))
    print(f"pool: {pool} objects; reviewed arm: {n} reviews a step ({args.share:.0%}) for {args.steps} steps; "
          f"plain arm: {plain_steps} steps; seeds {seeds}", flush=True)
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    for c in (plain, reviewed):
        compare(args.out, c, train_set, val_set, report=lambda m: print(m, flush=True))
    print(f"both arms done in {time.time() - t0:.0f} s", flush=True)


# ------------------------------------------------------------------------------------------ analysis
def curves(rows: list[dict], arm: str, review_s: float) -> dict[int, list[tuple[float, float, dict]]]:
    """seed → [(hours with a decision at ``review_s`` seconds, pool IoU, row)] in step order."""
    out: dict[int, list[tuple[float, float, dict]]] = {}
    for r in sorted((r for r in rows if r["strategy"] == arm and r.get("pool_iou", "") != ""),
                    key=lambda r: (int(r["seed"]), int(r["step"]))):
        reviews = int(r.get("reviews") or 0)
        hours = float(r["annotation_hours"]) - float(r.get("review_hours") or 0) + reviews * review_s / 3600
        out.setdefault(int(r["seed"]), []).append((hours, float(r["pool_iou"]), r))
    return out


def interpolate(curve: list[tuple[float, float, dict]], hours: float) -> float | None:
    """The pool IoU of a piecewise-linear (hours, IoU) curve at ``hours``; None outside its range."""
    for (h0, v0, _), (h1, v1, _) in zip(curve, curve[1:], strict=False):
        if h0 <= hours <= h1:
            return v0 if h1 == h0 else v0 + (v1 - v0) * (hours - h0) / (h1 - h0)
    return None


def mean_sd(xs: list[float]) -> str:
    if not xs:
        return ""
    return f"{statistics.fmean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")


def analyse(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from apis.names import display_name

    console = Console(width=160)
    arms = [a for a in dict.fromkeys(r["strategy"] for r in rows) if a == ARM or a.startswith(f"{ARM}+review")]
    reviewed = [a for a in arms if a != ARM]
    if ARM not in arms or not reviewed:
        sys.exit(f"results need both {ARM!r} and a reviewed arm; run without --analyse-only")
    steps = sorted({int(r["step"]) for r in rows if r["strategy"] in arms})
    per_arm = Table(title="per step, mean ± sd over seeds (hours at 3 s a decision)")
    per_arm.add_column("arm")
    per_arm.add_column("what")
    for s in steps:
        per_arm.add_column(f"P{s}", justify="right")
    for arm in arms:
        by = curves(rows, arm, 3.0)
        for what, get in (("hours", lambda h, v, r: h), ("pool IoU", lambda h, v, r: v),
                          ("Spearman(score, IoU)", lambda h, v, r: float(r["trust_spearman"])
                           if r.get("trust_spearman", "") != "" else None),
                          ("decisions so far", lambda h, v, r: float(r.get("reviews") or 0)),
                          ("accepted masks", lambda h, v, r: float(r.get("accepted") or 0))):
            if arm == ARM and what in ("decisions so far", "accepted masks"):
                continue
            cells = []
            for s in steps:
                xs = [x for c in by.values() for (h, v, r) in c if int(r["step"]) == s
                      if (x := get(h, v, r)) is not None]
                cells.append(mean_sd(xs))
            per_arm.add_row(display_name(arm), what, *cells)
    console.print(per_arm)

    for arm in reviewed:
        table = Table(title=f"{display_name(arm)} against {display_name(ARM)} at equal hours: pool IoU, paired "
                            "difference per seed (mean ± standard error over seeds)")
        table.add_column("s / decision")
        table.add_column("step")
        table.add_column("hours", justify="right")
        table.add_column("with review", justify="right")
        table.add_column("without (interpolated)", justify="right")
        table.add_column("Δ", justify="right")
        for cost in COSTS:
            with_r, plain = curves(rows, arm, cost), curves(rows, ARM, cost)
            for s in steps[1:]:
                hours, mine, theirs, deltas, beyond = [], [], [], [], 0
                for seed, curve in with_r.items():
                    point = next(((h, v) for h, v, r in curve if int(r["step"]) == s), None)
                    if point is None or seed not in plain:
                        continue
                    other = interpolate(plain[seed], point[0])
                    if other is None:
                        beyond += 1
                        continue
                    hours.append(point[0])
                    mine.append(point[1])
                    theirs.append(other)
                    deltas.append(point[1] - other)
                if not deltas:
                    if beyond:
                        table.add_row(f"{cost:g}", f"P{s}", "", "", f"beyond the plain arm's hours ({beyond} seeds)",
                                      "")
                    continue
                se = statistics.stdev(deltas) / math.sqrt(len(deltas)) if len(deltas) > 1 else None
                delta = f"{statistics.fmean(deltas):+.3f}" + (f" ± {se:.3f}" if se is not None else "")
                table.add_row(f"{cost:g}", f"P{s}", f"{statistics.fmean(hours):.3f}", mean_sd(mine), mean_sd(theirs),
                              delta + (f" ({beyond} seeds beyond)" if beyond else ""))
        console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/review"))
    ap.add_argument("--config", type=Path, default=None, help="YAML over the tiny preset (default: the preset)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=3, help="steps of the reviewed arm")
    ap.add_argument("--plain-steps", type=int, default=None, help="steps of the plain arm (default: enough to "
                                                                   "reach the reviewed arm's hours at 6 s a decision)")
    ap.add_argument("--share", type=float, default=0.1, help="share of the pool reviewed a step")
    ap.add_argument("--analyse-only", action="store_true", help="only print the tables of --out/results.csv")
    args = ap.parse_args()
    if not 0 < args.share <= 1:
        sys.exit(f"--share must be in (0, 1], got {args.share}")
    if not args.analyse_only:
        run(args)
    from apis.experiment import read_results

    results = args.out / "results.csv"
    if not results.is_file():
        sys.exit(f"{results}: no results yet; run without --analyse-only")
    analyse(read_results(results))


if __name__ == "__main__":
    main()
