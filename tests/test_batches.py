"""The shared pass over image batches: order, shards, targets and progress."""

from __future__ import annotations

import pytest
import torch

from apis.batches import image_batches, pool_target
from apis.data.loader import category_index, image_tensor


def test_batches_keep_the_order_and_report_progress(small_train):
    calls = []
    batches = list(image_batches(small_train, batch_size=3, progress=lambda d, t: calls.append((d, t))))
    n = len(small_train.images)
    assert [im.id for b in batches for im in b.images] == [im.id for im in small_train.images]
    assert [(b.start, b.stop) for b in batches] == [(s, min(s + 3, n)) for s in range(0, n, 3)]
    assert calls == [(b.stop, n) for b in batches]
    first = small_train.images[0]
    assert torch.equal(batches[0].tensors[0], image_tensor(small_train, first))
    assert batches[0].targets is None
    with pytest.raises(ValueError, match="targets=True"):
        batches[0].model_targets()


def test_progress_follows_the_callers_work(small_train):
    seen = []
    for batch in image_batches(small_train, batch_size=4, progress=lambda d, t: seen.append(("progress", d))):
        seen.append(("work", batch.stop))
    # Each batch is reported done only after the caller has handled it.
    assert seen[:2] == [("work", 4), ("progress", 4)]


def test_shards_split_the_batches_of_one_process(small_train):
    images = small_train.images[:10]
    whole = [b.start for b in image_batches(small_train, batch_size=2, images=images)]
    parts = [[b.start for b in image_batches(small_train, batch_size=2, images=images, shard=(r, 3))]
             for r in range(3)]
    assert sorted(s for p in parts for s in p) == whole
    assert parts[1] == whole[1::3]


def test_targets_are_the_pool_targets(small_train):
    classes = category_index(small_train)
    batch = next(image_batches(small_train, batch_size=2, targets=True))
    for im, t in zip(batch.images, batch.targets, strict=True):
        expect = pool_target(im, classes)
        assert torch.equal(t["boxes"], expect["boxes"]) and torch.equal(t["labels"], expect["labels"])
        assert t["windows"] == expect["windows"]
        assert t["boxes"].shape == (len(im.pool), 4)
        for a, w in zip(im.pool, t["windows"], strict=True):
            x0, y0, x1, y1 = a.box  # xyxy, original pixels
            assert w.contains(int((x0 + x1) / 2), int((y0 + y1) / 2))
    assert batch.model_targets()[0]["boxes"].device == batch.tensors[0].device


def test_bad_batch_size_is_refused(small_train):
    with pytest.raises(ValueError, match="batch_size"):
        next(image_batches(small_train, batch_size=0))
