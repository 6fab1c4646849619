"""The checks that judge a mask nobody drew, on hand-made masks (apis.mask_checks)."""

from __future__ import annotations

import numpy as np
import pytest

from apis.geometry import PixelWindow
from apis.mask_checks import (
    SourceScore,
    check_mask,
    choose_masks,
    judge_sources,
    pick_source,
    ranked_sources,
    sides_reached,
    source_weight,
)

WIN = PixelWindow(10, 20, 20, 28)  # 10 wide, 8 high


def disc() -> np.ndarray:
    ys, xs = np.mgrid[0:8, 0:10]
    return (xs - 4.5) ** 2 / 25 + (ys - 3.5) ** 2 / 16 <= 1.0


def test_sides_reached_counts_each_side():
    m = np.zeros((8, 10), bool)
    assert sides_reached(m) == 0
    m[3, :] = True  # a horizontal bar reaches left and right only
    assert sides_reached(m) == 2
    m[:, 4] = True  # a cross reaches all four
    assert sides_reached(m) == 4
    assert sides_reached(disc()) == 4
    small = np.zeros((8, 10), bool)
    small[3:5, 3:6] = True  # a blob in the middle of its box: the box is not tight around it
    assert sides_reached(small) == 0


def test_a_coarse_source_reaches_a_side_within_its_own_resolution():
    """A map drawn in 10-pixel cells loses the thin parts that touch a side (a person's hand): a side within one
    cell counts as reached for it, not for a source that draws single pixels."""
    person = np.zeros((100, 40), bool)
    person[0:100, 12:29] = True  # head to feet, arms lost: columns 0-11 and 29-39 empty
    assert sides_reached(person) == 2
    assert sides_reached(person, resolution=10.0) == 2
    assert sides_reached(person, resolution=13.0) == 4
    win = PixelWindow(0, 0, 40, 100)
    assert not check_mask(person, win).passes_box and check_mask(person, win, resolution=13.0).passes_box


def test_check_mask_counts_answers_inside_the_window_before_forcing():
    m = disc()
    answers = [(14, 23, 1), (10, 20, 0), (19, 27, 1), (0, 0, 1)]  # centre yes, corner no, corner "yes", outside
    c = check_mask(m, WIN, answers)
    assert (c.pixels, c.sides, c.agree, c.answers) == (int(m.sum()), 4, 2, 3)
    assert c.passes_box and c.ok  # 2 of 3 agree
    assert not check_mask(m, WIN, [(19, 27, 1)]).ok  # its single answer contradicts it
    empty = check_mask(np.zeros((8, 10), bool), WIN, [(14, 23, 0)])
    assert empty.empty and not empty.passes_box and not empty.ok


def test_judge_and_pick_prefer_the_accurate_source_that_fills_boxes():
    wins = {i: WIN for i in range(4)}
    full, empty, ell = np.ones((8, 10), bool), np.zeros((8, 10), bool), disc()
    masks = {"grabcut": {i: (wins[i], empty) for i in range(4)},
             "ellipse": {i: (wins[i], ell) for i in range(4)},
             "box": {i: (wins[i], full) for i in range(4)}}
    answers = {i: [(14, 23, 1), (10, 20, 0)] for i in range(4)}  # the object is at the centre, not the corner
    scores = {s.source: s for s in judge_sources(masks, answers)}
    assert scores["grabcut"].failing == 4 and scores["grabcut"].accuracy == pytest.approx(0.5)
    assert scores["ellipse"].accuracy == 1.0 and scores["ellipse"].failing == 0
    assert scores["box"].accuracy == pytest.approx(0.5)
    assert ranked_sources(list(scores.values())) == ["ellipse", "box", "grabcut"]
    # Without answers the box check alone decides: the first source in the given order that passes it on most
    # objects, GrabCut where it fills its boxes (1 of 4 failing) though the shapes fail on none.
    none = judge_sources(masks, {})
    assert pick_source(none) == "ellipse"
    mostly = {**masks, "grabcut": {i: (wins[i], empty if i == 0 else ell) for i in range(4)}}
    assert pick_source(judge_sources(mostly, {})) == "grabcut"
    assert ranked_sources(judge_sources(mostly, {})) == ["grabcut", "ellipse", "box"]
    assert pick_source(judge_sources({"grabcut": masks["grabcut"]}, {})) == "grabcut", "none passes: the fewest fail"
    # A source failing on most objects is not chosen even when its few answers agree.
    lucky = SourceScore("grabcut", 10, 9, 5, 5)
    assert pick_source([lucky, SourceScore("ellipse", 10, 0, 8, 10)]) == "ellipse"


def test_choose_masks_never_gives_an_empty_mask_when_another_source_has_one():
    full, empty, ell = np.ones((8, 10), bool), np.zeros((8, 10), bool), disc()
    masks = {"grabcut": {1: (WIN, empty), 2: (WIN, ell)}, "ellipse": {1: (WIN, ell), 2: (WIN, ell)},
             "box": {1: (WIN, full), 2: (WIN, full)}}
    picked = choose_masks(masks, ["grabcut", "ellipse", "box"])
    assert picked[1][0] == "ellipse" and picked[2][0] == "grabcut"
    # An answer the first source contradicts sends the object to the next one.
    picked = choose_masks(masks, ["grabcut", "box", "ellipse"], {2: [(19, 27, 1)]})
    assert picked[2][0] == "box"


def test_source_weight_is_the_squared_margin_over_chance_relative_to_full_trust():
    # (2a − 1)² relative to a source right on 80% of the answers, capped at 1, 0 at chance or below.
    assert source_weight(0.65) == pytest.approx((0.3 / 0.6) ** 2)  # 0.25
    assert source_weight(0.8) == pytest.approx(1.0)
    assert source_weight(0.95) == 1.0
    assert source_weight(0.5) == 0.0 and source_weight(0.3) == 0.0
    assert source_weight(0.75, full=1.0) == pytest.approx(0.25)
    assert source_weight(None) == 1.0, "no answer yet (box-only start): nothing speaks against the source"
    with pytest.raises(ValueError, match="full trust"):
        source_weight(0.7, full=0.5)
