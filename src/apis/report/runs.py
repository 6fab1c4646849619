"""What a report reads: a comparison folder (``apis compare``) or one run folder (``apis run``).

Everything is read, nothing written: stores are opened read-only (``mode=ro``), so a report can be made
of a comparison that another process is still adding to. Only arms that appear in the results table
(finished ones, in a comparison) are reported.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from apis.config import ConfigError, RunConfig, load_config
from apis.experiment import Row, read_results
from apis.layout import STORE_FILE, answer_phase, eval_phase, recorded_model
from apis.loop import StepResult
from apis.names import POINT_STRATEGIES


class ReportError(ValueError):
    """A folder the report cannot read; the message names the path and the fix."""


@dataclass(frozen=True)
class Arm:
    """One strategy with one seed: a run folder holding ``apis.sqlite`` and ``models/``."""

    strategy: str
    seed: int
    root: Path

    @property
    def store(self) -> Path:
        return self.root / STORE_FILE


@dataclass
class Source:
    """A folder to report on. ``rows`` are results.csv rows (:data:`apis.experiment.RESULT_COLUMNS`, as
    strings); ``arms`` the runs behind them, seeds ascending, strategies in the config's order."""

    root: Path
    kind: str  # "comparison" or "run"
    cfg: RunConfig
    rows: list[dict]
    arms: list[Arm]
    pool_size: int  # instances of the pool (split "train")
    notes: list[str]

    @property
    def strategies(self) -> list[str]:
        return list(dict.fromkeys(a.strategy for a in self.arms))

    @property
    def seeds(self) -> list[int]:
        return sorted({a.seed for a in self.arms})


# ------------------------------------------------------------------------------------------- stores
def connect(db: Path) -> sqlite3.Connection:
    """Open a store read-only without writing anything beside it.

    A store in use (a loop is writing it) has its WAL file: read through it (``mode=ro``), as one more
    reader of the files the writer keeps. A store closed cleanly has none, and all of it is in the main
    file: read that as immutable, because even a read-only WAL connection would create the WAL and
    shared-memory files next to it."""
    if not db.is_file():
        raise ReportError(f"{db}: no store there; name a run folder (apis run) or a comparison folder (apis compare)")
    live = db.with_name(db.name + "-wal").exists()
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro{'' if live else '&immutable=1'}", uri=True, timeout=30.0)


def phases(db: Path) -> dict[str, dict]:
    """Completed phases of a store: name → payload."""
    with closing(connect(db)) as conn:
        return {name: json.loads(payload) for name, payload in conn.execute("SELECT name, payload FROM phases")}


def points(db: Path) -> dict[int, list[tuple[int, int, int, int]]]:
    """Answered points per instance, in the order they were stored: ``(x, y, label, step)``."""
    out: dict[int, list[tuple[int, int, int, int]]] = {}
    with closing(connect(db)) as conn:
        for i, x, y, label, step in conn.execute("SELECT instance_id, x, y, label, step FROM points ORDER BY id"):
            out.setdefault(i, []).append((x, y, label, step))
    return out


def pool_size(db: Path) -> int:
    with closing(connect(db)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM instances WHERE split = 'train'").fetchone()[0])


def model_path(arm: Arm, done: dict[str, dict], step: int, member: int = 0) -> Path | None:
    """Where M(step) (or ensemble member ``member``) of ``arm`` was saved, None if not trained."""
    return recorded_model(arm.root, done.get, step, member)


def training_log(arm: Arm, done: dict[str, dict], step: int) -> list[dict]:
    """The rows of ``log.csv`` written while M(step) trained (beside its model file); [] if there is none."""
    path = model_path(arm, done, step)
    log = None if path is None else path.parent / "log.csv"
    if log is None or not log.is_file():
        return []
    with open(log, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("iteration", "").isdigit()]


def run_rows(arm: Arm, cfg: RunConfig) -> list[dict]:
    """results.csv rows of one run, from its store (as :meth:`apis.step_measures.StepMeasures.step_result` makes
    them)."""
    done = phases(arm.store)
    with closing(connect(arm.store)) as conn:
        n_inst = int(conn.execute("SELECT COUNT(*) FROM instances WHERE split = 'train'").fetchone()[0])
        per_step = dict(conn.execute("SELECT step, COUNT(*) FROM points GROUP BY step").fetchall())
        # Stores older than schema 3 have no reviews table (and no review time).
        has_reviews = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reviews'").fetchone()
        review_steps = ([int(r[0]) for r in conn.execute("SELECT step FROM reviews WHERE undone_at IS NULL")]
                        if has_reviews else [])
        # As apis.cost.drawn_boxes counts them: the standing boxes people drew (stores before schema 4 have none).
        has_boxes = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'boxes'").fetchone()
        drawn = int(conn.execute("SELECT COUNT(*) FROM boxes WHERE deleted = 0").fetchone()[0]) if has_boxes else 0
    rows = []
    steps = sorted(int(name.split("_")[1]) for name in done if re.fullmatch(r"eval_\d+", name))
    for s in steps:
        metrics, diag = done[eval_phase(s)], done.get(answer_phase(s)) or {}
        n_points = sum(n for k, n in per_step.items() if k <= s)
        # As StepMeasures.step_result counts them: decisions about the exports of steps before s.
        reviews = sum(1 for r in review_steps if r < s)
        review_s = reviews * cfg.cost.review_seconds
        result = StepResult(step=s, points_per_instance=round(n_points / max(1, n_inst), 3),
                            annotation_hours=round((n_points * cfg.cost.point_s + review_s + drawn * cfg.cost.box_s)
                                                   / 3600, 4),
                            reviews=reviews, review_hours=round(review_s / 3600, 4),
                            segm=metrics["segm"], bbox=metrics["bbox"], misclassified=diag.get("misclassified"),
                            boundary_distance=diag.get("boundary_distance"), chosen=int(diag.get("answered", 0)),
                            pool_iou=metrics.get("pool_iou"))
        rows.append({k: "" if v is None else str(v) for k, v in Row(arm.strategy, arm.seed, result).as_dict().items()})
    return rows


# ------------------------------------------------------------------------------------------ folders
def load(root: Path) -> Source:
    """Read a comparison folder (``config.yaml``, ``seed{k}/{strategy}/``, ``results.csv``) or a run folder
    (``config.yaml``, ``apis.sqlite``)."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder; name a run folder (apis run) or a comparison folder (apis compare)")
    cfg = _config(root / "config.yaml")
    if (root / STORE_FILE).is_file():
        done = phases(root / STORE_FILE)
        if "p0" not in done:
            raise ReportError(f"{root / STORE_FILE}: P0 has not been answered yet; run `apis run {root}` first")
        arm = Arm(done.get("arm", {}).get("strategy", "random"), int(done["p0"]["seed"]), root)
        rows = run_rows(arm, cfg)
        if not rows:
            raise ReportError(f"{root}: no step is evaluated yet; run `apis run {root}` until M0 is evaluated")
        return Source(root, "run", cfg, rows, [arm], pool_size(arm.store), [])
    seed_dirs = sorted((d for d in root.glob("seed*") if re.fullmatch(r"seed\d+", d.name) and d.is_dir()),
                       key=lambda d: int(d.name[4:]))
    order = {s: i for i, s in enumerate([*cfg.loop.strategies, *POINT_STRATEGIES])}
    found = [Arm(d.name, int(s.name[4:]), d) for s in seed_dirs for d in sorted(s.iterdir())
             if d.name != "shared" and (d / STORE_FILE).is_file()]
    if not found:
        raise ReportError(f"{root}: neither a run folder (no {STORE_FILE}) nor a comparison folder (no "
                          f"seed*/STRATEGY/{STORE_FILE}); name the folder given to `apis run` or `apis compare`")
    notes = []
    if (root / "results.csv").is_file():
        rows = read_results(root / "results.csv")
    else:
        notes.append("results.csv is missing (the comparison was stopped before an arm finished): the table is "
                      "read from the runs' stores")
        rows = [r for a in found for r in run_rows(a, cfg)]
    reported = {(r["strategy"], int(r["seed"])) for r in rows}
    arms = sorted((a for a in found if (a.strategy, a.seed) in reported),
                  key=lambda a: (a.seed, order.get(a.strategy, len(order)), a.strategy))
    unfinished = [f"{a.strategy} (seed {a.seed})" for a in found if a not in arms]
    if unfinished:
        notes.append(f"not in results.csv yet, left out: {', '.join(unfinished)}")
    if not arms:
        raise ReportError(f"{root}: no arm has finished yet; run `apis compare {root}` until one has")
    return Source(root, "comparison", cfg, rows, arms, pool_size(arms[0].store), notes)


def _config(path: Path) -> RunConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        raise ReportError(f"{e}; a report needs the config.yaml that apis run / apis compare wrote") from None

