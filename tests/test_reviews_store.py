"""Review decisions in the store: one row per decision, the mask seen kept, undo with its refusals."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from test_store import _coco, _records

from apis.data.records import encode_mask
from apis.store import NothingToUndo, ReviewDecision, Store, StoreError, UndoRefused
from apis.store.reviews import canonical_rle, mask_digest


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    coco_file = tmp_path / "train.json"
    coco_file.write_text(json.dumps(_coco()))
    with Store.open(tmp_path / "store.sqlite") as s:
        s.add_instances(_records(_coco(), coco_file), "train")
        yield s


def _rle(fill: int = 1) -> dict:
    m = np.zeros((6, 9), dtype=np.uint8)
    m[1 : 1 + fill, 2:5] = 1
    return encode_mask(m)


def test_decisions_are_stored_with_the_mask_seen(store: Store) -> None:
    a = store.add_review(1, 2, "accept", "ann", _rle(), apis_score=0.8, now=10.0)
    assert isinstance(a, ReviewDecision) and a.decision == "accept" and a.step == 2 and a.apis_score == 0.8
    assert a.mask == canonical_rle(_rle()) and a.mask_sha1 == mask_digest(_rle())
    store.add_review(2, 2, "reject", "bob", _rle(2), now=11.0)
    store.add_review(4, 2, "skip", "bob", _rle(3), now=12.0)
    standing = store.reviews()
    assert {i: d.decision for i, d in standing.items()} == {1: "accept", 2: "reject"}  # a skip is no decision
    assert [d.instance_id for d in store.review_log()] == [1, 2, 4]
    assert store.reviews(max_step=1) == {}
    # The mask reads back as the export wrote it (pycocotools round trip).
    rle = standing[1].mask
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert decoded.sum() == 3 and decoded[1, 2:5].all()


def test_the_same_decision_sent_twice_is_stored_once(store: Store) -> None:
    first = store.add_review(1, 0, "reject", "ann", _rle(), now=1.0)
    again = store.add_review(1, 0, "reject", "ann", _rle(), now=2.0)
    assert again.id == first.id and len(store.review_log()) == 1
    # A new decision about the same object replaces the standing one; the log keeps both.
    store.add_review(1, 0, "accept", "ann", _rle(), now=3.0)
    assert store.reviews()[1].decision == "accept" and len(store.review_log()) == 2


@pytest.mark.parametrize(("args", "message"), [
    ((99, 0, "accept", "ann", None), "instance 99 is not in this project"),
    ((1, 0, "maybe", "ann", None), "decision must be one of accept, reject, skip"),
    ((1, 0, "accept", " ", None), "reviewer"),
    ((1, -1, "accept", "ann", None), "step"),
    ((1, 0, "accept", "ann", {"size": [6], "counts": "x"}), "height, width"),
    ((1, 0, "accept", "ann", {"size": [6, 9], "counts": [1, 2]}), "compressed RLE"),
])
def test_bad_decisions_are_refused_and_write_nothing(store: Store, args: tuple, message: str) -> None:
    args = (*args[:4], _rle() if args[4] is None else args[4])
    with pytest.raises(StoreError, match=message):
        store.add_review(*args)
    assert store.review_log() == []


def test_undo_takes_back_the_reviewers_latest_decision(store: Store) -> None:
    store.add_review(1, 0, "accept", "ann", _rle(), now=1.0)
    store.add_review(2, 0, "reject", "ann", _rle(2), now=2.0)
    store.add_review(4, 0, "reject", "bob", _rle(3), now=3.0)
    undone = store.undo_review("ann", now=4.0)
    assert undone.instance_id == 2 and undone.undone_at == 4.0
    assert set(store.reviews()) == {1, 4}
    assert store.undo_review("ann").instance_id == 1
    with pytest.raises(NothingToUndo):
        store.undo_review("ann")
    assert len(store.review_log()) == 3  # undone rows stay in the log


def test_undo_is_refused_once_the_loop_acted_or_someone_decided_since(store: Store) -> None:
    store.add_review(1, 0, "reject", "ann", _rle(), now=1.0)
    store.add_review(1, 0, "accept", "bob", _rle(), now=2.0)
    with pytest.raises(UndoRefused, match="bob has decided"):
        store.undo_review("ann")
    store.mark_phase("select_1", {"choices": []})
    with pytest.raises(UndoRefused, match="selected step 1"):
        store.undo_review("bob")
    assert store.reviews()[1].decision == "accept"


def test_version_2_file_gains_the_reviews_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Store.open(path) as s:
        pass
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE reviews")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Store.open(path) as s:
        assert s.review_log() == []


def test_a_batch_of_decisions_is_stored_whole_or_not_at_all(store: Store) -> None:
    good = [(1, 0, "accept", _rle(), 0.5), (2, 0, "reject", _rle(2), None)]
    with pytest.raises(StoreError, match=r"item 2 \(instance 99\).*nothing was stored"):
        store.add_reviews([*good, (99, 0, "accept", _rle(), None)], "ann")
    assert store.review_log() == []
    first = store.add_reviews(good, "ann")
    again = store.add_reviews(good, "ann")  # the same file imported twice
    assert [d.id for d in again] == [d.id for d in first] and len(store.review_log()) == 2


def test_decisions_can_be_read_without_their_masks(store: Store) -> None:
    store.add_review(1, 0, "accept", "ann", _rle(), now=1.0)
    light, full = store.reviews(masks=False)[1], store.reviews()[1]
    assert light.mask == {} and light.mask_sha1 == full.mask_sha1 and light.as_dict() == full.as_dict()
    assert [d.as_dict() for d in store.review_log(masks=False)] == [d.as_dict() for d in store.review_log()]
