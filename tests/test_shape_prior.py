"""The box-shape prior of the trust score: a logistic fit of the ellipse's record at the answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apis.data.records import Category, CocoDataset, ImageRecord, Instance
from apis.geometry import omega
from apis.shape_prior import (
    MIN_OBJECTS,
    box_features,
    ellipse_fit,
    ellipse_hits,
    fit_logistic,
    mask_hits,
    source_fit,
)
from apis.yardsticks import ellipse_mask


def dataset(boxes_per_image: list[list[tuple[float, float, float, float]]], size: int = 100) -> CocoDataset:
    images, next_id = [], 1
    for k, boxes in enumerate(boxes_per_image):
        insts = []
        for box in boxes:
            insts.append(Instance(next_id, k + 1, 1, box, (box[2] - box[0]) * (box[3] - box[1])))
            next_id += 1
        images.append(ImageRecord(k + 1, f"{k}.png", size, size, tuple(insts)))
    return CocoDataset(Path("t.json"), Path("."), images, [Category(1, "thing")])


def test_features_of_hand_made_boxes():
    ds = dataset([[(0, 0, 40, 10), (20, 0, 60, 10)], [(0, 0, 10, 10)]])
    ids, x = box_features(ds)
    assert ids == [1, 2, 3]
    assert x[0, 0] == pytest.approx(np.log(4.0)) and x[0, 1] == pytest.approx(np.log(4.0))
    assert x[0, 2] == pytest.approx(0.5 * np.log(400.0))
    assert x[0, 3] == pytest.approx(0.5) and x[1, 3] == pytest.approx(0.5)  # half of each box lies under the other
    assert x[0, 4] == pytest.approx(np.log(2.0))
    assert x[2, 3] == 0.0 and x[2, 0] == 0.0 and x[2, 4] == 0.0  # alone and square


def test_ellipse_hits_at_the_centre_and_in_the_corner():
    ds = dataset([[(10, 10, 30, 30)]])
    # centre "yes": the ellipse is right; corner "yes": wrong; corner "no": right; outside the box: left out
    answers = {1: [(20, 20, 1), (10, 10, 1), (29, 10, 0), (50, 50, 1)]}
    assert ellipse_hits(ds, answers) == {1: (2, 3)}
    assert ellipse_hits(ds, {}) == {}


def test_ellipse_hits_agree_with_the_drawn_ellipse_on_any_box():
    from apis.geometry import omega
    from apis.yardsticks import ellipse_mask

    rng = np.random.default_rng(3)
    boxes = [(float(x), float(y), float(x + w), float(y + h))
             for x, y, w, h in zip(rng.uniform(0, 50, 40), rng.uniform(0, 50, 40), rng.uniform(0.3, 40, 40),
                                   rng.uniform(0.3, 40, 40), strict=True)]
    # Boxes hanging over the image's edge: their Ω holds a corner the ellipse misses, so the mask's fallback
    # pixel is all there is of it.
    boxes += [(-100.0, -100.0, 5.0, 5.0), (90.0, 95.0, 160.0, 140.0), (-3.0, 40.0, 1.5, 41.0)]
    ds = dataset([[b] for b in boxes])
    answers, expected = {}, {}
    for i, b in enumerate(boxes, start=1):
        win = omega(b, 100, 100)
        shape = ellipse_mask(b, win)
        pts = [(int(rng.integers(win.x0, win.x1)), int(rng.integers(win.y0, win.y1)), int(rng.integers(0, 2)))
               for _ in range(5)]
        answers[i] = pts
        expected[i] = (sum(int(shape[y - win.y0, x - win.x0]) == lab for x, y, lab in pts), 5)
    assert ellipse_hits(ds, answers) == expected
    corner = omega(boxes[40], 100, 100)
    drawn = ellipse_mask(boxes[40], corner)
    assert drawn.sum() == 1 and drawn[2, 2]  # only the fallback pixel: a "yes" there is the ellipse's hit
    assert ellipse_hits(dataset([[boxes[40]]]), {1: [(2, 2, 1), (0, 0, 1)]}) == {1: (1, 2)}


def test_logistic_fit_recovers_known_weights():
    x = np.linspace(-2, 2, 41)[:, None]
    trials = np.full(41, 1000.0)
    hits = trials / (1 + np.exp(-(0.5 + 1.5 * x[:, 0])))  # the expected counts: the fit must be exact
    w = fit_logistic(x, hits, trials, l2=0.0)
    assert w == pytest.approx([0.5, 1.5], abs=1e-6)
    shrunk = fit_logistic(x, hits, trials, l2=1e5)
    assert abs(shrunk[1]) < 0.5 * 1.5  # the ridge pulls the slope towards 0


def rng_boxes(n: int, seed: int) -> list[tuple[float, float, float, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = (60.0, 20.0) if rng.random() < 0.5 else (20.0, 60.0)
        out.append((10.0, 10.0, 10.0 + w, 10.0 + h))
    return out


def wide_and_tall() -> tuple[list[tuple[float, float, float, float]], CocoDataset, dict]:
    """60 boxes, one an image, wide or tall; one answer each: the centre "yes" of the wide boxes (the ellipse is
    right) and, for three tall boxes in four, the top-left corner "yes" (the ellipse is wrong)."""
    boxes = rng_boxes(60, 0)
    answers = {}
    for i, b in enumerate(boxes, start=1):
        wide = b[2] - b[0] > b[3] - b[1]
        answers[i] = [(40, 20, 1)] if wide else ([(10, 10, 1)] if i % 4 else [(20, 40, 1)])
    return boxes, dataset([[b] for b in boxes]), answers


def test_fit_learns_which_box_shapes_the_ellipse_misses():
    # One object per image; the ellipse is right at the wide boxes' answers (centre "yes") and wrong at most of
    # the tall boxes' (a corner "yes"): the fit must trust the wide boxes more, and it never sees a mask.
    boxes, ds, answers = wide_and_tall()
    fit = ellipse_fit(ds, answers)
    wide = [fit[i] for i, b in enumerate(boxes, start=1) if b[2] - b[0] > b[3] - b[1]]
    tall = [fit[i] for i, b in enumerate(boxes, start=1) if b[2] - b[0] < b[3] - b[1]]
    assert min(wide) > 0.8 > 0.5 > max(tall)
    assert all(0.0 < v < 1.0 for v in fit.values())


def test_no_fit_without_enough_answers_or_without_a_miss():
    boxes = rng_boxes(MIN_OBJECTS + 5, 1)
    ds = dataset([[b] for b in boxes])
    few = {i: [(10, 10, 1)] for i in range(1, MIN_OBJECTS)}
    assert set(ellipse_fit(ds, few).values()) == {1.0}
    centre = {i: [(int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2), 1)] for i, b in enumerate(boxes, start=1)}
    assert set(ellipse_fit(ds, centre).values()) == {1.0}  # the ellipse is right everywhere: nothing to learn
    assert len(ellipse_fit(ds, centre)) == len(boxes)


def test_mask_hits_reads_each_mask_at_its_answers():
    top = np.zeros((20, 20), dtype=bool)
    top[:10] = True  # the upper half of the first box (rows 10..19 of the image)
    masks = {1: (omega((10, 10, 30, 30), 100, 100), top), 2: (omega((0, 0, 4, 4), 100, 100), np.ones((4, 4), bool))}
    # (12, 12) "yes" on the upper half: right; (12, 25) "yes" on the lower half: wrong; (25, 25) "no": right;
    # (50, 50) outside the window: left out. Object 2 has no answer: left out.
    answers = {1: [(12, 12, 1), (12, 25, 1), (25, 25, 0), (50, 50, 1)]}
    assert mask_hits(masks, answers) == {1: (2, 3)}


def test_the_fit_of_a_source_whose_masks_are_the_ellipses_is_the_ellipse_fit():
    """source_fit and ellipse_fit learn the same thing from the same record: with the ellipses as the masks they
    agree on every object, and where the source is always right in wide boxes and never in tall ones, it learns
    that."""
    boxes, ds, answers = wide_and_tall()
    wins = {i: omega(b, 100, 100) for i, b in enumerate(boxes, start=1)}
    ellipses = {i: (w, ellipse_mask(boxes[i - 1], w)) for i, w in wins.items()}
    want = ellipse_fit(ds, answers)
    got = source_fit(ds, answers, ellipses)
    assert got.keys() == want.keys() and all(got[i] == pytest.approx(want[i], abs=1e-12) for i in want)
    # A source that is the box filled in wide boxes (right at every "yes") and empty in tall ones (wrong).
    filled = {i: (w, np.full((w.height, w.width), w.width > w.height)) for i, w in wins.items()}
    fit = source_fit(ds, answers, filled)
    wide = [fit[i] for i, b in enumerate(boxes, start=1) if b[2] - b[0] > b[3] - b[1]]
    tall = [fit[i] for i, b in enumerate(boxes, start=1) if b[2] - b[0] < b[3] - b[1]]
    assert min(wide) > 0.8 > 0.2 > max(tall)
    assert set(source_fit(ds, {}, filled).values()) == {1.0}  # no answer: nothing learnt
