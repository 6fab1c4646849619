"""Budgets in counts and seconds, checked against numbers worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from apis.cost import (
    BudgetSummary,
    CostModel,
    Counts,
    afis_masks_per_step,
    budget,
    masks_for_points_budget,
    points_for_masks_budget,
)
from apis.data.records import CocoDataset, ImageRecord, Instance
from apis.store import PointAnswer, Store


def test_defaults_are_the_papers() -> None:
    assert CostModel() == CostModel(point_s=0.9, mask_s=79.2, box_s=7.0)


def test_budget_of_counts() -> None:
    # 880 points · 0.9 s = 792 s; 2 masks · 79.2 s = 158.4 s; 10 boxes · 7 s = 70 s; total 1020.4 s.
    got = budget(Counts(points=880, masks=2, boxes=10))
    assert (got.points, got.masks, got.boxes) == (880, 2, 10)
    assert got.seconds == pytest.approx(1020.4, abs=1e-9)
    assert got.hours == pytest.approx(1020.4 / 3600, abs=1e-12)
    assert budget({"points": 4000}) == BudgetSummary(4000, 0, 0, 3600.0, 1.0)


def test_budget_with_another_cost_model() -> None:
    # 10 points · 2 s + 1 mask · 30 s + 3 boxes · 5 s = 65 s.
    got = budget({"points": 10, "masks": 1, "boxes": 3}, CostModel(point_s=2.0, mask_s=30.0, box_s=5.0))
    assert got.seconds == 65.0


def test_budget_of_a_store(tmp_path: Path) -> None:
    train = [Instance(i, 1, 1, (0.0, 0.0, 4.0, 4.0), 16.0) for i in (1, 2, 3)]
    val = [Instance(9, 2, 1, (0.0, 0.0, 4.0, 4.0), 16.0)]
    with Store.open(tmp_path / "s.sqlite") as store:
        for image_id, split, insts in ((1, "train", train), (2, "val", val)):
            image = ImageRecord(image_id, f"{image_id}.png", 8, 8, tuple(insts))
            store.add_instances(CocoDataset(tmp_path, tmp_path, [image], []), split)
        store.add_points([PointAnswer(i, 1, 1, 1, 0, "random") for i in (1, 2, 3)])
        store.add_points([PointAnswer(i, 2, 2, 0, 1, "entropy") for i in (1, 2)])
        # 5 points · 0.9 s + 3 training boxes · 7 s = 4.5 + 21 = 25.5 s.
        got = budget(store, split="train")
        assert (got.points, got.masks, got.boxes) == (5, 0, 3)
        assert got.seconds == pytest.approx(25.5, abs=1e-9)
        # Up to step 0: 3 points · 0.9 + 4 boxes (all splits) · 7 = 2.7 + 28 = 30.7 s.
        assert budget(store, max_step=0).seconds == pytest.approx(30.7, abs=1e-9)


def test_points_and_masks_equivalence_is_exact() -> None:
    # 79.2 / 0.9 = 88 points per mask.
    assert points_for_masks_budget(1) == 88
    assert points_for_masks_budget(3) == 264
    assert masks_for_points_budget(87) == 0
    assert masks_for_points_budget(88) == 1
    # In floats 616 · 0.9 / 79.2 = 6.999…; the budget buys exactly 616 / 88 = 7 masks.
    assert masks_for_points_budget(616) == 7
    assert masks_for_points_budget(1000) == 11  # 900 s / 79.2 s = 11.36


def test_afis_masks_per_step() -> None:
    # One point per instance per step on Q = 860001 instances (COCO train2017-sized): floor(Q / 88) = 9772.
    assert afis_masks_per_step(860_001) == 9772
    # Three points per instance on 100 instances: 300 · 0.9 = 270 s → floor(270 / 79.2) = 3 masks.
    assert afis_masks_per_step(100, points_per_instance=3) == 3
    assert afis_masks_per_step(100, cost=CostModel(point_s=1.0, mask_s=10.0)) == 10


def test_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="CostModel.point_s must be a positive number of seconds, got 0"):
        CostModel(point_s=0)
    with pytest.raises(ValueError, match="points must be a non-negative count"):
        masks_for_points_budget(-1)
    with pytest.raises(ValueError, match=r"unknown count keys \['polygons'\]"):
        budget({"polygons": 3})
