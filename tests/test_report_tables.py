"""The result tables (apis.report.tables) the command line prints: the columns and rows each shows, rendered as
text."""

from __future__ import annotations

import io
from types import SimpleNamespace as NS

from rich.console import Console

from apis.config import RunConfig
from apis.cost import BudgetSummary
from apis.report.tables import (
    budget_table,
    comparison_tables,
    diagnostics_table,
    metric_table,
    pseudo_box_table,
    run_table,
)


def text(table) -> str:
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(table)
    return console.export_text()


def rows_of(table) -> list[list[str]]:
    return [[str(c._cells[i]) for c in table.columns] for i in range(table.row_count)]


def result_rows() -> list[dict]:
    """results.csv rows of two strategies, two seeds, P0..P2: AP = 0.1·step, +0.05 for Entropy after P0, +0.04 for
    seed 1."""
    rows = []
    for strategy, lift in (("random", 0.0), ("entropy", 0.05)):
        for seed in (0, 1):
            for step in range(3):
                rows.append({"strategy": strategy, "seed": str(seed), "step": str(step),
                             "AP": f"{0.1 * step + lift * (step > 0) + 0.04 * seed:.4f}", "pool_iou": "",
                             "misclassified": "0.5" if step else "", "boundary_distance": "2.0" if step else ""})
    return rows


def test_metric_table_shows_the_mean_spread_and_paired_delta_to_random():
    rows = rows_of(metric_table(result_rows(), "AP", "mask AP on val"))
    assert [r[0] for r in rows] == ["Random", "Entropy"]
    assert rows[0][1:] == ["0.02 ± 0.02", "0.12 ± 0.02", "0.22 ± 0.02"]
    assert rows[1][2] == "0.17 ± 0.02 (Δ +0.05 ± 0.00)"  # Δ only after P0
    assert "Δ" not in rows[1][1]


def test_comparison_tables_add_a_table_only_for_columns_the_rows_hold():
    rows = result_rows()
    titles = [t.title for t in comparison_tables(rows)]
    assert len(titles) == 2 and titles[0].startswith("mask AP on val") and titles[1].startswith("chosen points")
    for r in rows:
        r["pool_iou"] = "0.5"
    assert any(t.title.startswith("pool mask IoU") for t in comparison_tables(rows))
    diag = rows_of(diagnostics_table(rows))
    assert diag == [["Random", "50% / 2.0", "50% / 2.0"], ["Entropy", "50% / 2.0", "50% / 2.0"]]


def test_run_table_shows_review_columns_only_when_a_step_was_reviewed():
    def step(s, reviews):
        return NS(step=s, points_per_instance=1.0 + s, reviews=reviews, accepted=reviews // 2, annotation_hours=0.5 * s,
                  segm={"AP": 10.0, "AP50": 20.0, "AP75": 5.0}, bbox={"AP": 12.0})

    plain = run_table([step(0, 0), step(1, 0)], "entropy", 0)
    assert [c.header for c in plain.columns] == [
        "step", "points/instance", "hours", "mask AP", "AP50", "AP75", "box AP"]
    reviewed = run_table([step(0, 0), step(1, 4)], "entropy", 0)
    assert [c.header for c in reviewed.columns][2:4] == ["reviews", "accepted"]
    assert rows_of(reviewed)[1] == ["1", "2.00", "4", "2", "0.500", "10.00", "20.00", "5.00", "12.00"]


def test_budget_table_counts_time_at_the_cost_rates_and_drawn_boxes_only_when_people_drew_them():
    cost = RunConfig().cost
    b = BudgetSummary(points=10, masks=1, boxes=0, seconds=0.0, hours=0.0, reviews=2)
    given = text(budget_table("p", 5, b, [0, 1], None, cost))
    seconds = 10 * cost.point_s + cost.mask_s + 2 * cost.review_seconds
    assert f"{seconds:.0f} s" in given and "boxes drawn" not in given and "2.00" in given and "0, 1" in given
    drawn = text(budget_table("p", 5, b, [], 7, cost))
    assert "boxes drawn by people" in drawn and f"{seconds + 7 * cost.box_s:.0f} s" in drawn
    assert f"boxes at {cost.box_s} s" in drawn


def test_pseudo_box_table_has_a_row_per_category_and_the_total():
    cat = NS(name="nucleus", gt=4, matched=3, missed=1, wrong_category=0, detections=5, false_positives=2)
    none = NS(name="cell", gt=0, matched=0, missed=0, wrong_category=0, detections=1, false_positives=1)
    r = NS(per_category={1: cat, 2: none}, gt_instances=4, matched=3, recall=0.75, missed=1, wrong_category=0,
           detections=6, false_positives=3)
    rows = rows_of(pseudo_box_table(r, 0.3, 0.5))
    assert rows == [["nucleus", "4", "3", "75.0%", "1", "0", "5", "2"], ["cell", "0", "0", "-", "0", "0", "1", "1"],
                    ["all", "4", "3", "75.0%", "1", "0", "6", "3"]]
