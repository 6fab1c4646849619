"""What a step asks about (apis.step_plan): the review decisions' plan, acted on once, and the point budget."""

from __future__ import annotations

import numpy as np
import pytest

from apis.data.records import encode_mask
from apis.layout import select_phase
from apis.selection.select import Choice
from apis.step_plan import limit_choices, review_plan
from apis.store import Store


def test_accepts_stand_and_a_reject_is_acted_on_once(tmp_path, small_train):
    ids = sorted(a.id for a in small_train.instances())
    image = small_train.image_by_id()[small_train.instances()[0].image_id]
    empty = encode_mask(np.zeros((image.height, image.width), np.uint8))
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add_instances(small_train, "train")
        assert review_plan(store, 1) == (set(), {})
        store.add_review(ids[0], 0, "accept", "ann", empty)
        reject = store.add_review(ids[1], 0, "reject", "ann", empty)
        store.add_review(ids[2], 0, "skip", "ann", empty)
        later = store.add_review(ids[3], 1, "reject", "ann", empty)
        assert review_plan(store, 1) == ({ids[0]}, {ids[1]: reject.id}), "decisions about M1's export wait"
        store.mark_phase(select_phase(1), {"choices": [], "review": {"rejects_used": [reject.id]}})
        assert review_plan(store, 2) == ({ids[0]}, {ids[3]: later.id}), "the used reject is not acted on again"
        again = store.add_review(ids[1], 1, "reject", "ann", empty)
        assert review_plan(store, 2) == ({ids[0]}, {ids[1]: again.id, ids[3]: later.id})


def _choices() -> list[Choice]:
    return [Choice(i, 1, x, 0, 1, 0.5) for x, i in enumerate((1, 2, 2, 3, 4, 5, 6))]


def test_a_point_budget_keeps_that_many_objects_in_pool_order():
    choices = _choices()
    assert limit_choices(choices, 0, "random", 0, 1) == choices
    assert limit_choices(choices, 9, "random", 0, 1) == choices
    a = limit_choices(choices, 3, "random", seed=0, step=1)
    assert len(a) == 3 and a == [c for c in choices if c in a], "pool order"
    assert a == limit_choices(choices, 3, "random", seed=0, step=1), "seeded"
    draws = {tuple(c.instance_id for c in limit_choices(choices, 3, "random", 0, s)) for s in range(1, 6)}
    assert len(draws) > 1, "each step draws anew"


def test_detection_loss_keeps_the_best_detected_objects():
    choices = _choices()
    losses = {1: 0.5, 2: 0.1, 3: 0.3, 4: 0.1, 5: 0.9, 6: 0.2}
    asked = []

    def loss(ids):
        asked.append(set(ids))
        return {i: losses[i] for i in ids}

    kept = limit_choices(choices, 3, "detection_loss", 0, 1, keep={2}, losses=loss)
    # Object 2 was rejected: both its points stay; the budget goes to 4, 6 and 3 (ties by id).
    assert [c.instance_id for c in kept] == [2, 2, 3, 4, 6]
    assert asked == [{1, 3, 4, 5, 6}]
    with pytest.raises(ValueError, match="detection_loss"):
        limit_choices(choices, 3, "detection_loss", 0, 1)
