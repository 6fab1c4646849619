"""The checks that judge a mask nobody drew, on hand-made masks (apis.mask_checks)."""

from __future__ import annotations

import numpy as np
import pytest

from apis.geometry import PixelWindow, ellipse_radius_sq
from apis.mask_checks import (
    BAND_PRIOR,
    MIN_CROSS_CHECKED,
    SourceScore,
    check_mask,
    choose_masks,
    cross_agreement,
    format_bands,
    format_scores,
    judge_sources,
    pick_source,
    radial_bands,
    ranked_sources,
    sides_reached,
    source_weight,
)
from apis.yardsticks import ellipse_mask

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


def test_without_answers_a_shape_is_judged_by_grabcut_where_grabcut_passes_the_box_check():
    """The box-only start: the shapes pass the box check by construction, so GrabCut's masks that pass it judge
    them (each object once), GrabCut's masks that fail it judge nothing, and the weights follow."""
    n = MIN_CROSS_CHECKED + 10
    full, empty, ell = np.ones((8, 10), bool), np.zeros((8, 10), bool), disc()
    cut = ell.copy()
    cut[:, :4] = False  # GrabCut's object: the ellipse without its left 4 columns (70% agree), still 3 sides
    assert check_mask(cut, WIN).passes_box
    ell_vs_cut = float((ell == cut).mean())
    box_vs_cut = float(cut.mean())
    masks = {"grabcut": {i: (WIN, cut if i < n - 10 else empty) for i in range(n)},  # the last 10 fail the check
             "ellipse": {i: (WIN, ell) for i in range(n)}, "box": {i: (WIN, full) for i in range(n)}}
    c = cross_agreement(masks["ellipse"], masks["grabcut"])
    assert (c.share, c.objects) == (pytest.approx(ell_vs_cut), n - 10)
    # By band: the share of each band's pixels where the two agree, summed over the objects that pass.
    bands = radial_bands(WIN)
    per_band = [float((ell == cut)[bands == k].mean()) if (bands == k).any() else 0.0 for k in range(6)]
    assert c.band_sums == pytest.approx([(n - 10) * x for x in per_band])
    assert c.band_objects == tuple((n - 10) * int((bands == k).any()) for k in range(6))
    scores = {s.source: s for s in judge_sources(masks, {})}
    assert scores["ellipse"].accuracy is None and scores["ellipse"].estimate == pytest.approx(ell_vs_cut)
    assert scores["box"].estimate == pytest.approx(box_vs_cut) and scores["box"].cross_objects == n - 10
    assert scores["grabcut"].estimate is None and source_weight(scores["grabcut"].estimate) == 1.0
    assert ell_vs_cut == pytest.approx(0.7)
    assert source_weight(scores["ellipse"].estimate) == pytest.approx((0.4 / 0.6) ** 2)
    lines = format_scores(list(scores.values()), "ellipse")
    assert f"≈{ell_vs_cut:.1%}" in lines[2] and f"on the {n - 10} objects" in lines[-1]
    # Too few objects where GrabCut passes: nothing judges the shapes, they keep full weight.
    few = {**masks, "grabcut": {i: (WIN, cut if i < MIN_CROSS_CHECKED - 1 else empty) for i in range(n)}}
    assert {s.source: s.estimate for s in judge_sources(few, {})}["ellipse"] is None
    # With answers the answers judge: no cross agreement is taken.
    answered = {s.source: s for s in judge_sources(masks, {0: [(14, 23, 1)]})}
    assert answered["ellipse"].cross is None and answered["ellipse"].estimate == 1.0
    # Windows that differ (GrabCut cut over another crop) are not compared pixel by pixel.
    other = PixelWindow(10, 20, 20, 29)
    assert cross_agreement(masks["ellipse"], {i: (other, np.vstack([cut, cut[:1]])) for i in range(n)}).objects == 0
    # The shapes' weights per band follow their agreement with GrabCut there, shrunk towards the overall one.
    acc = scores["ellipse"].band_accuracy()
    k = int(bands[0, 0])  # a corner's band: both say no, they agree
    assert acc[k] == pytest.approx(((n - 10) * per_band[k] + BAND_PRIOR * ell_vs_cut) / (n - 10 + BAND_PRIOR))
    assert scores["ellipse"].band_weights() == tuple(source_weight(float(a)) for a in acc)
    assert scores["grabcut"].band_weights() is None, "GrabCut has no other judge than the box check"


def test_radial_bands_place_pixels_by_their_normalised_radius():
    win = PixelWindow(0, 0, 20, 10)  # centre (10, 5), half-sides 10 and 5
    # ρ of a pixel centre: (x + 0.5 − 10)/10 and (y + 0.5 − 5)/5.
    xs, ys = np.array([9, 12, 14, 16, 19, 9, 0]), np.array([4, 5, 6, 5, 5, 9, 0])
    # ρ: 0.14, 0.25, 0.5, 0.65, 0.95, 0.9 (x 0.05, y 0.9), √(0.95² + 0.9²) = 1.31
    assert radial_bands(win, xs, ys).tolist() == [0, 1, 2, 2, 3, 3, 5]
    full = radial_bands(win)
    assert full.shape == (10, 20) and full[4:6, 9:11].max() == 0 and full[0, 0] == full[-1, -1] == 5
    assert np.array_equal(full, full[::-1, ::-1]), "symmetric about the window's centre"


def test_the_bands_and_the_ellipse_share_one_radius():
    # Box (0, 0, 4, 2): centre (2, 1), radii 2 and 1; pixel (0, 0)'s centre (0.5, 0.5): 0.75² + 0.5² = 0.8125.
    assert ellipse_radius_sq((0, 0, 4, 2), np.array([0, 1]), np.array([0, 0])).tolist() == [0.8125, 0.3125]
    win = PixelWindow(3, 2, 40, 17)
    bands = radial_bands(win)
    ellipse = ellipse_mask((win.x0, win.y0, win.x1, win.y1), win)
    # Inside the ellipse exactly where ρ ≤ 1: bands 0-3, and band 4 only on its rim (ρ = 1 opens band 4).
    assert ellipse[bands <= 3].all() and not ellipse[bands >= 5].any()
    assert ellipse.sum() < (bands <= 4).sum()


def test_answers_are_counted_by_band_and_each_band_weighed_by_its_own_agreement():
    win = PixelWindow(0, 0, 20, 10)
    ell = radial_bands(win) <= 2  # a shape right about the object's core, wrong about its rim
    obj = radial_bands(win) <= 1
    # Each object: one answer at the centre (band 0, the shape right), one in band 2 (the shape says yes, the
    # object no), one in a corner (band 5, both no).
    answers = {i: [(9, 4, int(obj[4, 9])), (14, 6, int(obj[6, 14])), (0, 0, int(obj[0, 0]))] for i in range(20)}
    (score,) = judge_sources({"ellipse": {i: (win, ell) for i in range(20)}}, answers)
    assert score.band_answers == (20, 0, 20, 0, 0, 20) and score.band_agree == (20, 0, 0, 0, 0, 20)
    assert score.accuracy == pytest.approx(40 / 60)
    acc = score.band_accuracy()
    # Shrunk towards the overall 2/3 by BAND_PRIOR answers; a band without answers keeps the overall agreement.
    assert acc[0] == pytest.approx((20 + BAND_PRIOR * 2 / 3) / (20 + BAND_PRIOR))
    assert acc[2] == pytest.approx((0 + BAND_PRIOR * 2 / 3) / (20 + BAND_PRIOR))
    assert acc[1] == pytest.approx(2 / 3)
    w = score.band_weights()
    assert w[0] == w[5] == 1.0 and w[2] == 0.0 and w[1] == pytest.approx(source_weight(2 / 3))
    lines = format_bands([score])
    assert len(lines) == 3 and "100%" not in lines[1] and lines[2].split()[-6:] == [f"{x:.2f}" for x in w]
    # No answers: no bands.
    (bare,) = judge_sources({"ellipse": {0: (win, ell)}}, {})
    assert bare.band_accuracy() is None and bare.band_weights() is None and format_bands([bare]) == []
