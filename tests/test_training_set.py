"""TrainingSet keeps built targets within a byte budget and gives the same targets past it."""

from __future__ import annotations

import torch

from apis.data.loader import TrainingSet, category_index, make_target, target_bytes


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_targets_past_the_budget_are_built_again_the_same(small_train) -> None:
    masks = {a.id for im in small_train.images for a in im.pool}  # full masks: each target holds G×H×W
    classes = category_index(small_train)
    built = [make_target(im, classes, mask_ids=masks) for im in small_train.images if im.pool]
    sizes = [target_bytes(t) for t in built]
    assert all(s >= 64 * 64 for s in sizes)  # at least one 64×64 mask each
    budget = sizes[0] + sizes[1]
    data = TrainingSet(small_train, mask_ids=masks, cache_target_bytes=budget)
    for _ in range(2):  # the second pass reads the cache where it holds the target
        for i, expected in enumerate(built):
            image, target = data[(i, False)]
            assert _same(target, expected)
            assert image.shape[-2:] == expected["masks"].shape[-2:]
            assert data.cached_target_bytes <= budget
    assert data.cached_target_bytes == budget  # the first two, and no more
    flipped = data[(len(built) - 1, True)][1]  # past the budget too, flipped like a cached one
    assert torch.equal(flipped["masks"], built[-1]["masks"].flip(-1))


def test_a_small_set_keeps_every_target(small_train) -> None:
    data = TrainingSet(small_train)
    for i in range(len(data)):
        data[(i, False)]
    assert 0 < data.cached_target_bytes == sum(target_bytes(t) for t in data._targets.values())
    assert len(data._targets) == len(data)
