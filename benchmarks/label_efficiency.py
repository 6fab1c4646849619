"""Label efficiency: the strategy comparison over seeds, and how many points Random needs to match
Entropy.

Runs (or resumes) `apis compare` on a COCO dataset — the built-in one by default — then prints mask AP
per strategy and step (mean ± sample standard deviation over seeds) and the ratio "points per instance
Random needs to reach Entropy's AP at P2" over the 3 points per instance Entropy used (linear
interpolation along Random's mean curve; a lower bound when Random never gets there).

    python benchmarks/label_efficiency.py --out runs/label_efficiency            # 6 strategies, 3 seeds
    python benchmarks/label_efficiency.py --out runs/le --strategies random,entropy --seeds 0,1,2
    python benchmarks/label_efficiency.py --out runs/coco --train ../shared/data/train.json \\
        --val ../shared/data/val.json                                             # your own COCO data
    python benchmarks/label_efficiency.py --out /tmp/strat6 --analyse-only      # tables of a finished run

CPU runtime, tiny preset, built-in dataset (2 cores): about 13 minutes per seed for M0 and Random +
Entropy, plus about 4 minutes per further strategy and seed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mean_curve(rows: list[dict], strategy: str, metric: str = "AP") -> list[tuple[float, float, float, int]]:
    """(points per instance, mean, sample sd, seeds) per step of ``strategy``, in step order."""
    by_step: dict[int, list[dict]] = {}
    for r in rows:
        if r["strategy"] == strategy:
            by_step.setdefault(int(r["step"]), []).append(r)
    out = []
    for step in sorted(by_step):
        rs = by_step[step]
        vals = [float(r[metric]) for r in rs]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append((float(rs[0]["points_per_instance"]), statistics.fmean(vals), sd, len(vals)))
    return out


def points_to_reach(curve: list[tuple[float, float, float, int]], target: float) -> tuple[float, bool]:
    """Points per instance at which the piecewise-linear ``curve`` (points, mean AP, ...) first reaches
    ``target``; (last points, False) when it never does."""
    for (p0, a0, *_), (p1, a1, *_) in zip(curve, curve[1:], strict=False):
        if a0 >= target:
            return p0, True
        if a1 >= target:
            return p0 + (p1 - p0) * (target - a0) / (a1 - a0), True
    if curve and curve[-1][1] >= target:
        return curve[-1][0], True
    return (curve[-1][0] if curve else 0.0), False


def efficiency_ratio(rows: list[dict], better: str = "entropy", baseline: str = "random",
                     step: int = 2) -> tuple[float, bool, float, float]:
    """(points ``baseline`` needs / points ``better`` used at ``step``, reached?, the target AP, the
    points ``better`` used). Not reached: the ratio is a lower bound."""
    good = mean_curve(rows, better)
    if len(good) <= step:
        raise ValueError(f"results have no step {step} for {better!r}")
    used, target = good[step][0], good[step][1]
    needed, reached = points_to_reach(mean_curve(rows, baseline), target)
    return needed / used, reached, target, used


def print_tables(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from apis.names import display_name

    console = Console(width=140)
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    steps = sorted({int(r["step"]) for r in rows})
    for metric, title in (("AP", "mask AP"), ("pool_iou", "pool mask IoU")):
        if not any(r.get(metric) not in (None, "") for r in rows):
            continue
        table = Table(title=f"{title} on val, mean ± sd over seeds" if metric == "AP" else
                      f"{title} of the exported pool masks, mean ± sd over seeds")
        table.add_column("strategy")
        table.add_column("seeds", justify="right")
        for s in steps:
            table.add_column(f"P{s}", justify="right")
        for strategy in strategies:
            present = [r for r in rows if r["strategy"] == strategy and r.get(metric) not in (None, "")]
            if not present:
                continue
            curve = {s: c for s in steps
                     for c in mean_curve([r for r in present if int(r["step"]) == s], strategy, metric)}
            name = display_name(strategy)
            fmt = "{:.2f} ± {:.2f}" if metric == "AP" else "{:.3f} ± {:.3f}"
            table.add_row(name, str(max(c[3] for c in curve.values())),
                          *[fmt.format(curve[s][1], curve[s][2]) if s in curve else "" for s in steps])
        console.print(table)
    if any(r.get("pool_iou_box") not in (None, "") for r in rows):
        from apis.cli import print_yardsticks

        print_yardsticks(rows)
    hours = Table(title="annotation hours per step")
    hours.add_column("strategy")
    for s in steps:
        hours.add_column(f"P{s}", justify="right")
    for strategy in strategies:
        by_step = {int(r["step"]): float(r["annotation_hours"]) for r in rows if r["strategy"] == strategy}
        hours.add_row(display_name(strategy),
                      *[f"{by_step[s]:.3f}" if s in by_step else "" for s in steps])
    console.print(hours)
    names = set(strategies)
    if {"random", "entropy"} <= names and len(steps) > 2:
        ratio, reached, target, used = efficiency_ratio(rows)
        bound = "" if reached else "> "
        console.print(f"Random needs {bound}{ratio * used:.2f} points per instance to reach Entropy's P2 mask AP "
                      f"({target:.2f}, {used:.0f} points per instance): ratio {bound}{ratio:.2f}"
                      + ("" if reached else " (not reached by Random's last step: a lower bound)"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/label_efficiency"))
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "strategies.yaml")
    ap.add_argument("--strategies", default=None, help="comma-separated; default: the config's")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train", type=Path, default=None, help="COCO json of the pool (default: built-in)")
    ap.add_argument("--val", type=Path, default=None)
    ap.add_argument("--analyse-only", action="store_true", help="only print the tables of --out/results.csv")
    args = ap.parse_args()
    if not args.analyse_only:
        config = args.config
        if args.train or args.val:
            if not (args.train and args.val):
                sys.exit("give both --train and --val")
            import yaml

            raw = yaml.safe_load(args.config.read_text()) or {}
            raw["data"] = {**raw.get("data", {}), "train": str(args.train.resolve()), "val": str(args.val.resolve())}
            args.out.mkdir(parents=True, exist_ok=True)
            config = args.out / "benchmark_config.yaml"
            config.write_text(yaml.safe_dump(raw, sort_keys=False))
        cmd = [str(Path(sys.executable).with_name("apis")), "compare", str(args.out), "--config", str(config),
               "--seeds", args.seeds]
        if args.strategies:
            cmd += ["--strategies", args.strategies]
        subprocess.run(cmd, check=True)
    from apis.experiment import read_results

    results = args.out / "results.csv"
    if not results.is_file():
        sys.exit(f"{results}: no results yet; run without --analyse-only")
    print_tables(read_results(results))


if __name__ == "__main__":
    main()
