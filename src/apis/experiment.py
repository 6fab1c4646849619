"""Strategy comparisons with a paired design: per seed, every strategy starts from one shared P0 and
one shared M0 and fine-tunes with the same data order, so differences come from selection alone.

Layout of a comparison directory::

    config.yaml
    seed{k}/shared/       P0, M0 and its evaluation (an ActiveRun stopped after step 0)
    seed{k}/{strategy}/   a copy of the shared store, then steps 1..S of that strategy (``{strategy}+review{N}``
                          with the simulated reviewer on, ``loop.review.per_step`` N: a comparison run once
                          without and once with review into the same folder pairs the two on one P0 and M0)
    results.csv           one row per (strategy, seed, step)
    ap_vs_step.png, ap_vs_hours.png
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sqlite3
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apis.afis import AfisRun
from apis.atomic import write_text_atomic
from apis.config import RunConfig, dump_config
from apis.data.records import CocoDataset
from apis.evaluate import METRICS
from apis.layout import STORE_FILE
from apis.loop import ActiveRun, StepResult, mask_oracle
from apis.names import POINT_STRATEGIES, afis_arm_name, parse_afis_arm, review_arm_name
from apis.yardsticks import COLUMNS
from apis.yardsticks import METHODS as YARDSTICKS

RESULT_COLUMNS = (
    # annotation_hours: the answers' time plus review_hours, the time of the review decisions that shaped
    # the row (``reviews`` of them, about the exports of earlier steps; ``accepted`` objects among them).
    "strategy", "seed", "step", "points_per_instance", "annotation_hours", "reviews", "review_hours",
    *METRICS, *(f"box_{m}" for m in METRICS), "misclassified", "boundary_distance", "chosen", "pool_iou",
    "accepted", "trust_spearman", "trust_worst_tenth",
    # The no-model yardsticks on the same pool (apis.yardsticks): mean IoU and its standard error over
    # ``yardstick_objects`` objects (a fixed sample of a large pool).
    *(c for m in YARDSTICKS for c in (COLUMNS[m], f"{COLUMNS[m]}_se")), "yardstick_objects",
)


@dataclass
class Row:
    strategy: str
    seed: int
    result: StepResult

    def as_dict(self) -> dict:
        r = self.result
        return {
            "strategy": self.strategy, "seed": self.seed, "step": r.step,
            "points_per_instance": r.points_per_instance, "annotation_hours": r.annotation_hours,
            "reviews": r.reviews, "review_hours": r.review_hours,
            **{m: r.segm[m] for m in METRICS}, **{f"box_{m}": r.bbox[m] for m in METRICS},
            "misclassified": "" if r.misclassified is None else round(r.misclassified, 4),
            "boundary_distance": "" if r.boundary_distance is None else round(r.boundary_distance, 3),
            "chosen": r.chosen,
            "pool_iou": "" if r.pool_iou is None else round(r.pool_iou, 4),
            "accepted": r.accepted,
            "trust_spearman": "" if r.trust_spearman is None else round(r.trust_spearman, 4),
            "trust_worst_tenth": "" if r.trust_worst_tenth is None else round(r.trust_worst_tenth, 4),
            **yardstick_columns(r.yardsticks),
        }


def yardstick_columns(yardsticks: dict | None) -> dict:
    """results.csv's yardstick columns of one row (empty when the row has none, e.g. AFIS arms)."""
    ys = yardsticks or {}
    out: dict = {}
    for m in YARDSTICKS:
        e = ys.get(m)
        out[COLUMNS[m]] = "" if e is None else round(e["mean"], 4)
        out[f"{COLUMNS[m]}_se"] = "" if e is None else round(e["se"], 4)
    out["yardstick_objects"] = next((e["n"] for e in ys.values()), "")
    return out


def fork_store(src: Path, dst: Path) -> None:
    """Copy a live SQLite store consistently (backup API, not a file copy), atomically. The model paths
    its training phases hold are relative to the source's folder; they are rebased onto the copy's."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    a, b = sqlite3.connect(src), sqlite3.connect(tmp)
    try:
        a.backup(b)
        rows = b.execute("SELECT name, payload FROM phases WHERE name LIKE 'train_%'").fetchall()
        for name, payload in rows:
            p = json.loads(payload)
            p["model"] = os.path.relpath((src.parent / p["model"]).resolve(), dst.parent.resolve())
            b.execute("UPDATE phases SET payload = ? WHERE name = ?", (json.dumps(p), name))
        b.commit()
    finally:
        a.close()
        b.close()
    os.replace(tmp, dst)


def fork_sources(shared: Path, arm: Path) -> None:
    """Give an arm the source table M0 learnt from (``pseudo_masks/sources-P0.json``), so that its step 1 says
    "judged as at step 0" in one line where the same answers judge the sources, instead of the table again."""
    table = shared / "pseudo_masks" / "sources-P0.json"
    if table.is_file():
        (arm / "pseudo_masks").mkdir(parents=True, exist_ok=True)
        write_text_atomic(table.read_text(), arm / "pseudo_masks" / "sources-P0.json")


def compare(
    out: Path,
    cfg: RunConfig,
    train_set: CocoDataset,
    val_set: CocoDataset,
    report: Callable[[str], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Row]:
    for s in cfg.loop.strategies:
        if s not in POINT_STRATEGIES:
            raise ValueError(f"unknown strategy {s!r}; choose from {', '.join(POINT_STRATEGIES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    oracle, gt_masks = mask_oracle(train_set)
    rows: list[Row] = []
    for seed in cfg.loop.seeds:
        shared = out / f"seed{seed}" / "shared"
        base = ActiveRun(shared, cfg, train_set, val_set, "random", seed, oracle, gt_masks, report, progress,
                         cache_dir=out / "cache")
        step0 = base.run(steps=0)[0]
        for strategy in cfg.loop.strategies:
            name = review_arm_name(strategy, cfg.loop.review.per_step)
            arm = out / f"seed{seed}" / name
            if not (arm / STORE_FILE).exists():
                fork_sources(shared, arm)
                fork_store(shared / STORE_FILE, arm / STORE_FILE)
            report(f"seed {seed}: {name}")
            run = ActiveRun(arm, cfg, train_set, val_set, strategy, seed, oracle, gt_masks, report, progress,
                            cache_dir=out / "cache")
            results = run.run()
            rows.extend(Row(name, seed, r) for r in [step0, *results[1:]])
            write_results(out / "results.csv", rows)
        for spec in cfg.loop.afis:
            # AFIS buys masks from its own random start with the P0 budget; it shares the data order only.
            level, measure = parse_afis_arm(spec)
            name = afis_arm_name(level, measure)
            report(f"seed {seed}: {name}")
            afis = AfisRun(out / f"seed{seed}" / name, cfg, train_set, val_set, level, measure, seed, report, progress)
            rows.extend(Row(name, seed, r) for r in afis.run())
            write_results(out / "results.csv", rows)
    return rows


def write_results(path: Path, rows: list[Row]) -> None:
    """Write ``rows`` into results.csv, keeping rows of other (strategy, seed) pairs already there, so a
    later ``apis compare`` with more strategies or seeds adds to the table instead of replacing it."""
    new = [r.as_dict() for r in rows]
    fresh = {(d["strategy"], str(d["seed"])) for d in new}
    kept = [d for d in read_results(path) if (d["strategy"], d["seed"]) not in fresh] if path.is_file() else []
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(kept + new)
    write_text_atomic(text.getvalue(), path)


def read_results(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@dataclass
class TableCell:
    mean: float
    spread: float  # standard deviation over seeds (0 with one seed)
    delta: float | None  # mean paired difference to Random
    delta_se: float | None  # its standard error over seeds


def summary_table(rows: list[dict], metric: str = "AP", baseline: str = "random") -> dict[str, dict[int, TableCell]]:
    """strategy → step → mean ± spread over seeds, and the paired difference to ``baseline``."""
    values: dict[tuple[str, int, int], float] = {}
    for r in rows:
        if r.get(metric, "") != "":
            values[(r["strategy"], int(r["seed"]), int(r["step"]))] = float(r[metric])
    table: dict[str, dict[int, TableCell]] = {}
    for strategy in dict.fromkeys(k[0] for k in values):
        table[strategy] = {}
        for step in sorted({k[2] for k in values if k[0] == strategy}):
            seeds = sorted(k[1] for k in values if k[0] == strategy and k[2] == step)
            xs = [values[(strategy, s, step)] for s in seeds]
            diffs = [values[(strategy, s, step)] - values[(baseline, s, step)] for s in seeds
                     if (baseline, s, step) in values]
            delta = statistics.fmean(diffs) if diffs and strategy != baseline else None
            se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if delta is not None and len(diffs) > 1 else None
            table[strategy][step] = TableCell(statistics.fmean(xs), statistics.pstdev(xs) if len(xs) > 1 else 0.0,
                                              delta, se)
    return table
