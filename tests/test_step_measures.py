"""What each step measures (apis.step_measures): diagnostics of the chosen pixels, pool IoU against the
yardsticks, nothing outside simulation, and a step's row with its hours."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from stub_models import ConstantModel

from apis.config import preset
from apis.data.records import encode_mask
from apis.oracle import MaskOracle, initial_answers
from apis.selection.select import Choice
from apis.step_measures import StepMeasures, metrics_line, point_diagnostics
from apis.store import Store


def _measures(small_train, small_val, tmp_path, gt_masks, **loop) -> StepMeasures:
    cfg = preset("tiny")
    cfg = dataclasses.replace(cfg, eval_batch_size=2, loop=dataclasses.replace(cfg.loop, refine_masks="none", **loop))
    return StepMeasures(cfg, small_train, small_val, tmp_path / "cache", lambda store, step: (None, None), gt_masks)


def test_diagnostics_of_the_chosen_pixels():
    square = np.zeros((5, 5), np.uint8)
    square[1:4, 1:4] = 1  # its boundary: the eight pixels around (2, 2)
    masks = {1: square, 2: square, 3: np.zeros((5, 5), np.uint8)}
    choices = [Choice(1, 1, 2, 2, 1, 0.9), Choice(2, 1, 0, 0, 1, 0.2), Choice(3, 1, 4, 4, 0, None)]
    # M(s−1) said 0.9 where the answer is no (wrong) and 0.2 where it is no (right); it had no map for the third.
    out = point_diagnostics(choices, [0, 0, 1], masks.__getitem__)
    assert out["misclassified"] == 0.5
    assert out["boundary_distance"] == pytest.approx((1 + math.sqrt(2)) / 2), "an empty mask's distance is left out"
    assert point_diagnostics(choices, [0, 0, 1], None) == {"misclassified": 0.5}
    assert point_diagnostics(choices[2:], [1], None) == {"misclassified": None}
    with pytest.raises(ValueError):
        point_diagnostics(choices, [0, 1], None)


def test_metrics_line():
    assert metrics_line(2, {"segm": {"AP": 12.345}, "bbox": {"AP": 40}}) == "step 2: mask AP 12.35  box AP 40.00"


def test_nothing_is_measured_on_the_pool_outside_simulation(tmp_path, small_train, small_val):
    m = _measures(small_train, small_val, tmp_path, None)
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add_instances(small_train, "train")
        assert not m.simulated
        assert m.pool_iou(ConstantModel(1.0), store, 0) == {"pool_iou": None, "trust_spearman": None,
                                                             "trust_worst_tenth": None}
        assert m.yardsticks(store, 0) is None


@pytest.mark.parametrize("objects", [300, 5])
def test_the_pool_iou_of_masks_that_fill_their_boxes_is_the_box_yardstick(tmp_path, small_train, small_val, objects):
    """A model sure of every pixel of every box exports the boxes filled: its pool IoU is the box yardstick's, over
    the whole pool or over the same sample of it."""
    m = _measures(small_train, small_val, tmp_path, MaskOracle(small_train).mask, yardstick_objects=objects)
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add_instances(small_train, "train")
        assert m.simulated
        ious = m.pool_iou(ConstantModel(1.0), store, 0)
        ys = m.yardsticks(store, 0)
    assert ys["box"]["n"] == min(objects, len(small_train.instances()))
    assert ious["pool_iou"] == pytest.approx(ys["box"]["mean"], abs=1e-5)
    assert 0.0 < ys["box"]["mean"] < ys["grabcut"]["mean"] <= 1.0
    assert ious["trust_spearman"] is None, "every mask has the same trust score: nothing to rank"


def test_a_steps_row_counts_its_points_reviews_and_hours(tmp_path, small_train, small_val):
    m = _measures(small_train, small_val, tmp_path, None)
    pool = small_train.instances()
    n = len(pool)
    image = small_train.image_by_id()[pool[0].image_id]
    empty = encode_mask(np.zeros((image.height, image.width), np.uint8))
    metrics = {"segm": {"AP": 1.0}, "bbox": {"AP": 2.0}, "pool_iou": 0.5, "yardsticks": {"box": {}},
               "trust_spearman": 0.1, "trust_worst_tenth": 0.2}
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add_instances(small_train, "train")
        oracle = MaskOracle(small_train)
        store.add_points(initial_answers(small_train, oracle, 0))
        step1 = [dataclasses.replace(a, step=1) for a in initial_answers(small_train, oracle, 5)[:3]
                 if all((a.x, a.y) != (p.x, p.y) for p in store.points()[a.instance_id])]
        store.add_points(step1, phase="answer_1",
                         phase_payload={"answered": len(step1), "misclassified": 0.25, "boundary_distance": 1.5})
        store.add_review(pool[0].id, 0, "accept", "ann", empty)
        store.add_review(pool[1].id, 0, "skip", "ann", empty)
        store.add_review(pool[2].id, 1, "reject", "ann", empty)  # about M1's export: counted at step 2
        row0, row1 = m.step_result(store, 0, metrics), m.step_result(store, 1, metrics)
    assert (row0.points_per_instance, row0.annotation_hours, row0.reviews, row0.chosen) == (
        1.0, round(n * 0.9 / 3600, 4), 0, 0)
    assert row0.misclassified is None and row0.segm == {"AP": 1.0} and row0.pool_iou == 0.5
    k = len(step1)
    assert (row1.points_per_instance, row1.chosen, row1.reviews, row1.accepted) == (round((n + k) / n, 3), k, 2, 1)
    assert row1.annotation_hours == round(((n + k) * 0.9 + 2 * 3.0) / 3600, 4)
    assert row1.review_hours == round(6.0 / 3600, 4)
    assert (row1.misclassified, row1.boundary_distance) == (0.25, 1.5)
    assert (row1.yardsticks, row1.trust_spearman, row1.trust_worst_tenth) == ({"box": {}}, 0.1, 0.2)
