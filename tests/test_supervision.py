"""What `apis train` learns from (apis.supervision) and the splits a config names (apis.splits)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from apis.config import ConfigError, preset
from apis.store import PointAnswer, Store
from apis.supervision import random_points, run_answers, supervision, write_training_points


def test_each_kind_of_supervision(small_train):
    pool = {a.id for a in small_train.instances()}
    assert supervision(small_train, "masks").mask_ids == pool
    boxes = supervision(small_train, "boxes")
    assert boxes.points is None and boxes.mask_ids is None
    pts = supervision(small_train, "points", points=2, seed=3).points
    assert set(pts) == pool and all(len(p) == 2 for p in pts.values())
    assert pts == random_points(small_train, 2, 3)  # the same seed draws the same points
    given = {next(iter(pool)): [(1, 2, 1, 0)]}
    assert supervision(small_train, "points", given_points=given).points == given
    with pytest.raises(ValueError, match="choose points, masks, boxes"):
        supervision(small_train, "polygons")


def test_random_points_lie_in_their_boxes_and_answer_the_mask(small_train):
    from apis.oracle import MaskOracle

    oracle = MaskOracle(small_train)
    boxes = {a.id: a.box for a in small_train.instances()}
    for iid, ps in random_points(small_train, 1, 0).items():
        (x, y, label), = ps
        x0, y0, x1, y1 = boxes[iid]
        assert x0 - 1 <= x <= x1 and y0 - 1 <= y <= y1
        assert label == int(oracle.mask(iid)[y, x])


def test_run_answers_reads_a_store_up_to_a_step(tmp_path, small_train):
    """Every answer up to the step, and apart from them the ones at random points (the entropy one left out)."""
    a = small_train.instances()[0]
    with Store.open(tmp_path / "apis.sqlite") as store:
        store.add_instances(small_train, "train")
        x, y = int(a.box[0]), int(a.box[1])
        store.add_points([PointAnswer(a.id, x, y, 1, 0, "random", "t"),
                          PointAnswer(a.id, x + 1, y, 0, 1, "entropy", "t")])
    assert run_answers(tmp_path) == ({a.id: [(x, y, 1, 0), (x + 1, y, 0, 1)]}, {a.id: [(x, y, 1)]})
    assert run_answers(tmp_path, max_step=0) == ({a.id: [(x, y, 1, 0)]}, {a.id: [(x, y, 1)]})
    with pytest.raises(FileNotFoundError, match="name a project or run folder"):
        run_answers(tmp_path / "nope")
    n = write_training_points(run_answers(tmp_path)[0], tmp_path / "tp.json")
    assert n == 2 and json.loads((tmp_path / "tp.json").read_text()) == {
        str(a.id): {"point_coords": [[x, y], [x + 1, y]], "point_labels": [1, 0]}}


def test_splits_of_a_config(tmp_path, small_synthetic):
    from apis.splits import run_splits

    cfg = preset("tiny")
    named = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=str(small_synthetic["train"]),
                                                              val=str(small_synthetic["val"])))
    out, train, val = run_splits(named, tmp_path)
    assert out.data.train == str(small_synthetic["train"].resolve()) and train.images and val.images
    with pytest.raises(ConfigError, match="data.val is empty"):
        run_splits(dataclasses.replace(named, data=dataclasses.replace(named.data, val="")), tmp_path)
    other = json.loads(small_synthetic["val"].read_text())
    other["categories"] = other["categories"][::-1]
    reordered = small_synthetic["val"].with_name("reordered.json")  # beside its images
    reordered.write_text(json.dumps(other))
    mixed = dataclasses.replace(named, data=dataclasses.replace(named.data, val=str(reordered)))
    with pytest.raises(ConfigError, match="categories differ"):
        run_splits(mixed, tmp_path)
