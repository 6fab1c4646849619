"""The simulated reviewer (apis.simulated_review): the least trusted masks not yet decided, judged against GT and
stored one by one; resumed, it judges only what it has not judged; simulation only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_step_measures import ConstantModel

from apis.config import preset
from apis.data.records import encode_mask
from apis.oracle import SIMULATED_REVIEWER, MaskOracle, MaskReviewer
from apis.simulated_review import SimulatedReview, refuse_review, review_line, standing_decisions
from apis.store import Store


def test_the_simulated_reviewer_needs_gt_masks():
    gt = MaskOracle.mask
    refuse_review(0, people=True, gt_masks=None)  # off: nothing to refuse
    refuse_review(3, people=False, gt_masks=gt)
    with pytest.raises(ValueError, match="loop.review.per_step 3: .* simulation only.*set per_step 0"):
        refuse_review(3, people=True, gt_masks=gt)
    with pytest.raises(ValueError, match="simulation only"):
        refuse_review(3, people=False, gt_masks=None)


def test_the_least_trusted_masks_are_judged_once_and_a_persons_accept_is_left_alone(tmp_path, small_train):
    cfg = preset("tiny")
    cfg = dataclasses.replace(cfg, eval_batch_size=2, loop=dataclasses.replace(
        cfg.loop, refine_masks="none", review=dataclasses.replace(cfg.loop.review, per_step=4, accept_iou=0.6)))
    oracle = MaskOracle(small_train)
    calls = []
    reviewer = SimulatedReview(cfg, small_train, oracle.mask, lambda store, step: calls.append(step),
                               progress=lambda label: None)
    pool = sorted(a.id for a in small_train.instances())
    image = small_train.image_by_id()[small_train.instances()[0].image_id]
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add_instances(small_train, "train")
        store.add_review(pool[0], 0, "accept", "ann", encode_mask(np.zeros((image.height, image.width), np.uint8)))
        # Every mask of a model sure of its whole box has the same trust score: ties go by annotation id.
        payload = reviewer.review(store, 0, ConstantModel(1.0))
        made = standing_decisions(store, 0)
        assert [d.instance_id for d in made] == pool[1:5], "the person's accept is final: not judged again"
        assert all(d.reviewer == SIMULATED_REVIEWER and d.step == 0 for d in made)
        judge = MaskReviewer(oracle.mask, 0.6)
        assert [d.decision for d in made] == [judge.judge(d.instance_id, d.mask)[0] for d in made]
        ious = [judge.judge(d.instance_id, d.mask)[1] for d in made]
        assert payload == {"reviewer": SIMULATED_REVIEWER, "reviewed": 4,
                           "accepted": sum(i >= 0.6 for i in ious), "rejected": sum(i < 0.6 for i in ious),
                           "mean_iou": round(float(np.mean(ious)), 5)}
        # Resumed: the four are judged already, so nothing new is stored and the payload is the same.
        assert reviewer.review(store, 0, ConstantModel(1.0)) == payload
        assert len(store.review_log(0)) == 5
    assert calls == [], "no refinement: the colours are not asked about"
    assert review_line(0, payload) == (f"step 0: 4 masks reviewed (simulated): {payload['accepted']} accepted, "
                                       f"{payload['rejected']} rejected")
