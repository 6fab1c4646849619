"""The result tables the terminal shows, as rich :class:`~rich.table.Table` objects: a comparison's metrics per
strategy and step (``apis compare``, ``apis demo``), a run's steps (``apis run``), a COCO evaluation, a project's
budget and the pseudo boxes' match. The command line prints them; nothing here reads a file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from apis.names import display_name

if TYPE_CHECKING:
    from apis.cost import BudgetSummary, CostModel
    from apis.evaluate import EvalResult
    from apis.loop import StepResult
    from apis.pseudo_boxes import PseudoBoxResult

#: Metrics shown with three digits (shares and hours); the others (AP) with two.
THREE_DIGITS = ("pool_iou", "annotation_hours", "trust_spearman", "trust_worst_tenth")


def comparison_tables(rows: list[dict]) -> list[Table]:
    """The tables of a comparison's ``results.csv`` rows (:func:`apis.experiment.read_results`): mask AP, then the
    pool IoU, hours, trust and yardstick tables where the rows hold those columns, then the chosen points'
    diagnostics."""
    tables = [metric_table(rows, "AP", "mask AP on val")]
    if any(r.get("pool_iou", "") != "" for r in rows):
        tables.append(metric_table(rows, "pool_iou", "pool mask IoU of the exported masks (train)"))
    if any(r.get("reviews", "") not in ("", "0", 0) for r in rows):
        # Arms with review spend more hours a step than those without: compare them at equal hours.
        tables.append(metric_table(rows, "annotation_hours", "annotation hours (answers + review decisions)"))
    if any(r.get("trust_spearman", "") not in ("", None) for r in rows):
        tables.append(metric_table(rows, "trust_spearman", "Spearman(apis_score, true IoU) of the exported pool masks"))
    if any(r.get("trust_worst_tenth", "") not in ("", None) for r in rows):
        tables.append(metric_table(rows, "trust_worst_tenth", "share of the worst tenth of the pool masks (true IoU) "
                                   "among the least trusted tenth (apis_score)"))
    if any(r.get("pool_iou_box", "") not in ("", None) for r in rows):
        tables.append(yardstick_table(rows))
    tables.append(diagnostics_table(rows))
    return tables


def metric_table(rows: list[dict], metric: str, title: str) -> Table:
    """``metric`` per strategy (rows) and step (columns): mean ± sd over seeds, and the paired difference Δ to
    Random (± its standard error) after P0."""
    # apis.experiment brings torch; imported where a comparison's table needs it, not for a budget.
    from apis.experiment import summary_table

    table = summary_table(rows, metric)
    steps = sorted({s for cells in table.values() for s in cells})
    seeds = len({r["seed"] for r in rows})
    t = Table(title=f"{title} (mean ± sd over {seeds} seed{'s' * (seeds > 1)}; Δ = paired difference to Random)")
    t.add_column("strategy")
    for s in steps:
        t.add_column(f"P{s}", justify="right")
    for strategy, cells in table.items():
        row = [display_name(strategy)]
        for s in steps:
            c = cells.get(s)
            if c is None:
                row.append("")
                continue
            digits = 3 if metric in THREE_DIGITS else 2
            text = f"{c.mean:.{digits}f}" + (f" ± {c.spread:.{digits}f}" if seeds > 1 else "")
            if c.delta is not None and s > 0:
                se = f" ± {c.delta_se:.{digits}f}" if c.delta_se is not None else ""
                text += f" (Δ {c.delta:+.{digits}f}{se})"
            row.append(text)
        t.add_row(*row)
    return t


def yardstick_table(rows: list[dict]) -> Table:
    """The no-model yardsticks beside the model's pool IoU: what the boxes (and the same answered points)
    give without any model. Mean over seeds; ± the standard error over objects when a sample was used."""
    from apis.experiment import summary_table
    from apis.yardsticks import COLUMNS

    names = {"box": "box filled", "ellipse": "ellipse in the box", "grabcut": "GrabCut from the box"}
    steps = sorted({int(r["step"]) for r in rows})
    sampled = {r.get("yardstick_objects", "") for r in rows} - {""}
    t = Table(title="no-model yardsticks: pool mask IoU (train)"
              + (f", {'/'.join(sorted(sampled))} objects" if sampled else ""))
    t.add_column("yardstick")
    for s in steps:
        t.add_column(f"P{s}", justify="right")

    def cells(column: str, strategy: str | None) -> list[str]:
        table = summary_table(rows, column)
        se = summary_table(rows, f"{column}_se")
        strategy = strategy if strategy is not None else next(iter(table), None)
        out = []
        for s in steps:
            c = table.get(strategy, {}).get(s)
            e = se.get(strategy, {}).get(s)
            out.append("" if c is None else f"{c.mean:.3f}" + (f" ± {e.mean:.3f}" if e is not None else ""))
        return out

    for m, label in names.items():
        t.add_row(label, *cells(COLUMNS[m], None))
    for strategy in summary_table(rows, COLUMNS["grabcut_points"]):
        t.add_row(f"GrabCut + {display_name(strategy)}'s points", *cells(COLUMNS["grabcut_points"], strategy))
    return t


def diagnostics_table(rows: list[dict]) -> Table:
    """Per strategy and step after P0: the share of the chosen points M(s−1) misclassified and their mean distance
    to the GT boundary (pixels), means over seeds."""
    steps = sorted({int(r["step"]) for r in rows})
    diag = Table(title="chosen points: share misclassified by M(s−1) / mean distance to GT boundary (px)")
    diag.add_column("strategy")
    for s in steps[1:]:
        diag.add_column(f"P{s}", justify="right")
    by = {}
    for r in rows:
        if int(r["step"]) > 0:
            by.setdefault(r["strategy"], {}).setdefault(int(r["step"]), []).append(r)
    for strategy, per_step in by.items():
        cells = []
        for s in steps[1:]:
            rs = per_step.get(s, [])
            mis = [float(r["misclassified"]) for r in rs if r["misclassified"] != ""]
            dist = [float(r["boundary_distance"]) for r in rs if r["boundary_distance"] != ""]
            cells.append(f"{sum(mis) / len(mis):.0%} / {sum(dist) / len(dist):.1f}" if mis and dist else "")
        diag.add_row(display_name(strategy), *cells)
    return diag


def run_table(results: Sequence[StepResult], strategy: str, seed: int) -> Table:
    """One run's steps: points per instance, review decisions where any was
    made (hours then include them), annotation hours, mask AP, AP50, AP75 and box AP on val."""
    t = Table(title=f"{strategy}, seed {seed}")
    reviewed = any(x.reviews for x in results)  # hours then include cost.review_seconds per decision
    for col in ("step", "points/instance", *(("reviews", "accepted") if reviewed else ()), "hours", "mask AP",
                "AP50", "AP75", "box AP"):
        t.add_column(col, justify="right")
    for x in results:
        t.add_row(str(x.step), f"{x.points_per_instance:.2f}", *((str(x.reviews), str(x.accepted)) if reviewed else ()),
                  f"{x.annotation_hours:.3f}", f"{x.segm['AP']:.2f}", f"{x.segm['AP50']:.2f}", f"{x.segm['AP75']:.2f}",
                  f"{x.bbox['AP']:.2f}")
    return t


def eval_table(ev: EvalResult, metrics: Sequence[str], json_path: Path | str) -> Table:
    """COCO ``metrics`` (:data:`apis.evaluate.METRICS`) of masks and boxes in ``ev``, on the split ``json_path``."""
    t = Table(title=f"COCO evaluation on {json_path} ({ev.images} images, {ev.seconds:.1f} s)")
    t.add_column("type")
    for m in metrics:
        t.add_column(m, justify="right")
    for name, res in (("segm", ev.segm), ("bbox", ev.bbox)):
        t.add_row(name, *[f"{res[m]:.2f}" for m in metrics])
    return t


def budget_table(project: Path | str, instances: int, budget: BudgetSummary, steps: Sequence[int], drawn: int | None,
                 cost: CostModel) -> Table:
    """A project's annotation so far: ``instances`` in the pool, the ``budget`` (:func:`apis.cost.budget`: points,
    masks, review decisions) and the ``steps`` answered, the boxes people ``drawn`` (None: the json gave them), and
    their time at the ``cost`` rates beside polygon masks for every instance."""
    t = Table(title=f"project {project}")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("instances in the pool", str(instances))
    if drawn is not None:
        t.add_row("boxes drawn by people", str(drawn))
    t.add_row("point answers", str(budget.points))
    t.add_row("points per instance", f"{budget.points / max(1, instances):.2f}")
    t.add_row("steps answered", ", ".join(map(str, steps)) or "-")
    t.add_row("masks bought", str(budget.masks))
    t.add_row("review decisions", str(budget.reviews))
    seconds = (budget.points * cost.point_s + budget.masks * cost.mask_s + budget.reviews * cost.review_seconds
               + (drawn or 0) * cost.box_s)
    t.add_row(f"annotation time (points at {cost.point_s} s, masks at {cost.mask_s} s, reviews at "
              f"{cost.review_seconds} s" + (f", boxes at {cost.box_s} s" if drawn is not None else "") + ")",
              f"{seconds:.0f} s")
    t.add_row("for comparison: polygon masks for every instance", f"{instances * cost.mask_s / 3600:.2f} h")
    return t


def pseudo_box_table(r: PseudoBoxResult, score: float, iou: float) -> Table:
    """Pseudo boxes matched to GT instances per category (``r``, kept at detection ``score`` and matched at box
    ``iou``), and over all categories."""
    t = Table(title=f"Pseudo boxes (score >= {score:g}) matched to GT instances at IoU >= {iou:g}")
    for col in ("category", "GT", "matched", "recall", "missed", "wrong category", "detections", "false positives"):
        t.add_column(col, justify="left" if col == "category" else "right")
    for c in r.per_category.values():
        t.add_row(c.name, str(c.gt), str(c.matched), f"{c.matched / c.gt:.1%}" if c.gt else "-", str(c.missed),
                  str(c.wrong_category), str(c.detections), str(c.false_positives))
    t.add_row("all", str(r.gt_instances), str(r.matched), f"{r.recall:.1%}" if r.recall is not None else "-",
              str(r.missed), str(r.wrong_category), str(r.detections), str(r.false_positives), style="bold")
    return t
