"""Uncertainty maths and point strategies, pinned with hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from apis.geometry import PixelWindow
from apis.names import DISPLAY_NAMES, NEEDS_GT
from apis.selection.points import (
    STRATEGIES,
    Candidate,
    OmegaExhausted,
    choose_points,
    entropy_point,
    labelled_mask,
    least_error_gt_point,
    lowest_entropy_point,
    max_error_gt_point,
    random_point,
    variance_point,
)
from apis.selection.uncertainty import binary_entropy, entropy_of_mean, error_map, variance

LN2 = math.log(2.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cand(probs, window: PixelWindow | None = None, labelled=None, gt=None) -> Candidate:
    probs = torch.as_tensor(probs, dtype=torch.float32)
    if probs.dim() == 2:
        probs = probs.unsqueeze(0)
    h, w = probs.shape[1:]
    window = window or PixelWindow(0, 0, w, h)
    if labelled is None:
        labelled = torch.zeros(h, w, dtype=torch.bool)
    gt = None if gt is None else torch.as_tensor(gt)
    return Candidate(probs=probs, window=window, labelled=labelled, gt_mask=gt)


# ---------------------------------------------------------------- uncertainty maths


def test_entropy_of_half_is_ln2():
    assert entropy_of_mean(torch.full((1, 1, 1), 0.5)).item() == pytest.approx(LN2, abs=1e-7)


def test_entropy_is_of_the_mean_not_mean_of_entropies():
    # p̄ = (0.2 + 0.8) / 2 = 0.5 → ln 2, whereas the mean of the two entropies would be H(0.2) < ln 2.
    probs = torch.tensor([0.2, 0.8]).view(2, 1, 1)
    assert entropy_of_mean(probs).item() == pytest.approx(LN2, abs=1e-6)


def test_entropy_is_exactly_zero_at_certainty():
    probs = torch.tensor([[0.0, 1.0]]).view(1, 1, 2)
    h = entropy_of_mean(probs)
    assert not torch.isnan(h).any()
    assert h.tolist() == [[0.0, 0.0]]
    assert binary_entropy(torch.tensor([0.0, 1.0])).tolist() == [0.0, 0.0]


def test_entropy_hand_value():
    expected = -0.1 * math.log(0.1) - 0.9 * math.log(0.9)  # 0.325083
    assert entropy_of_mean(torch.full((3, 1, 1), 0.1)).item() == pytest.approx(expected, abs=1e-6)
    # Mean of [0.0, 0.2] is 0.1 too.
    assert entropy_of_mean(torch.tensor([0.0, 0.2]).view(2, 1, 1)).item() == pytest.approx(expected, abs=1e-6)


def test_entropy_symmetric_and_shape():
    p = torch.rand(4, 5, 6, generator=gen(1))
    h = entropy_of_mean(p)
    assert h.shape == (5, 6)
    torch.testing.assert_close(h, entropy_of_mean(1 - p))
    assert (h >= 0).all() and (h <= LN2 + 1e-6).all()


def test_variance_hand_value_population():
    # mean 0.5, deviations ±0.3 → 0.09 (population, divide by K = 2; the sample variance would be 0.18).
    probs = torch.tensor([0.2, 0.8]).view(2, 1, 1)
    assert variance(probs).item() == pytest.approx(0.09, abs=1e-7)
    assert variance(torch.full((1, 3, 3), 0.7)).eq(0).all()


def test_error_map_hand_values():
    probs = torch.tensor([[[0.9, 0.9, 0.5]], [[0.7, 0.9, 0.5]]])  # 2×1×3, p̄ = [0.8, 0.9, 0.5]
    gt = torch.tensor([[0, 1, 1]], dtype=torch.uint8)
    torch.testing.assert_close(error_map(probs, gt), torch.tensor([[0.8, 0.1, 0.5]]))


def test_scores_reject_empty_set_and_bad_shapes():
    with pytest.raises(ValueError, match="K = 0"):
        entropy_of_mean(torch.zeros(0, 2, 2))
    with pytest.raises(ValueError, match="K×h×w"):
        variance(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="GT mask shape"):
        error_map(torch.zeros(1, 2, 2), torch.zeros(3, 3))


# ---------------------------------------------------------------- point strategies


def test_entropy_point_is_argmax_in_original_pixels():
    probs = torch.full((2, 3, 4), 0.02)
    probs[:, 1, 2] = torch.tensor([0.4, 0.6])  # p̄ = 0.5 at row 1, col 2: the unique max
    window = PixelWindow(10, 20, 14, 23)
    x, y = entropy_point(cand(probs, window), gen())
    assert (x, y) == (12, 21)
    assert window.contains(x, y)


def test_labelled_max_is_skipped_for_second_best():
    p = torch.tensor([[0.5, 0.3, 0.1], [0.05, 0.01, 0.0]])  # best (0,0), second (0,1)
    window = PixelWindow(5, 7, 8, 9)
    labelled = labelled_mask(window, [(5, 7), (100, 100)])  # the max pixel; the other is outside Ω
    assert labelled.sum() == 1 and labelled[0, 0]
    assert entropy_point(cand(p, window, labelled), gen()) == (6, 7)


def test_never_a_labelled_pixel_and_always_in_omega():
    window = PixelWindow(3, 4, 9, 8)
    probs = torch.rand(3, 4, 6, generator=gen(2))
    labelled = torch.rand(4, 6, generator=gen(3)) < 0.7
    labelled[0, 0] = False  # at least one free pixel
    gt = (torch.rand(4, 6, generator=gen(4)) < 0.5).to(torch.uint8)
    c = Candidate(probs, window, labelled, gt_mask=gt)
    for name, fn in STRATEGIES.items():
        for seed in range(20):
            x, y = fn(c, gen(seed))
            assert window.contains(x, y), name
            assert not labelled[y - window.y0, x - window.x0], name


def test_k0_falls_back_to_reproducible_random():
    window = PixelWindow(2, 3, 12, 13)
    c = Candidate(torch.zeros(0, 10, 10), window, torch.zeros(10, 10, dtype=torch.bool))
    picks = [entropy_point(c, gen(s)) for s in range(30)]
    assert all(window.contains(x, y) for x, y in picks)
    assert len(set(picks)) > 10  # really random, not a fixed pixel
    assert picks == [random_point(c, gen(s)) for s in range(30)]  # same draw as random
    assert picks == [entropy_point(c, gen(s)) for s in range(30)]  # reproducible per seed
    for name in ("variance", "lowest_entropy"):
        assert [STRATEGIES[name](c, gen(s)) for s in range(30)] == picks
    # An empty set may come with any trailing shape.
    c0 = Candidate(torch.zeros(0), window, torch.zeros(10, 10, dtype=torch.bool))
    assert random_point(c0, gen(5)) == picks[5]


def test_random_is_uniform_over_free_pixels():
    window = PixelWindow(0, 0, 2, 2)
    labelled = torch.tensor([[True, False], [False, False]])
    c = cand(torch.zeros(0, 2, 2), window, labelled)
    g = gen(7)
    counts: dict[tuple[int, int], int] = {}
    for _ in range(3000):
        p = random_point(c, g)
        counts[p] = counts.get(p, 0) + 1
    assert set(counts) == {(1, 0), (0, 1), (1, 1)}
    assert all(800 < n < 1200 for n in counts.values())


def test_variance_with_one_map_equals_entropy_choice():
    probs = torch.rand(1, 5, 5, generator=gen(8))
    c = cand(probs, PixelWindow(1, 1, 6, 6))
    for seed in range(5):
        assert variance_point(c, gen(seed)) == entropy_point(c, gen(seed))


def test_variance_picks_disagreement_not_entropy():
    # Pixel (0,0): both maps say 0.5 → max entropy, zero variance.
    # Pixel (0,1): 0.1 and 0.9 → p̄ = 0.5 as well, variance 0.16: the disagreement pick.
    # Pixel (0,2): 0.3 and 0.5 → variance 0.01.
    probs = torch.tensor([[[0.5, 0.1, 0.3]], [[0.5, 0.9, 0.5]]])
    c = cand(probs)
    assert variance_point(c, gen()) == (1, 0)


def test_lowest_entropy_picks_argmin():
    p = torch.tensor([[0.5, 0.4, 0.3], [0.6, 0.97, 0.2]])  # surest: 0.97 at row 1, col 1
    assert lowest_entropy_point(cand(p, PixelWindow(30, 40, 33, 42)), gen()) == (31, 41)


def test_error_strategies_on_hand_case():
    # p̄ = mean of two maps; gt below. |p̄ − gt|:
    #   (0,0): p̄ 0.85, gt 0 → 0.85  ← most confidently wrong
    #   (0,1): p̄ 0.50, gt 1 → 0.50
    #   (1,0): p̄ 0.05, gt 0 → 0.05  ← most confidently right
    #   (1,1): p̄ 0.70, gt 1 → 0.30
    probs = torch.tensor([[[0.8, 0.4], [0.0, 0.6]], [[0.9, 0.6], [0.1, 0.8]]])
    gt = torch.tensor([[0, 1], [0, 1]])
    c = cand(probs, PixelWindow(100, 200, 102, 202), gt=gt)
    assert max_error_gt_point(c, gen()) == (100, 200)
    assert least_error_gt_point(c, gen()) == (100, 201)
    # With the confidently wrong pixel labelled, the next most wrong one is asked.
    labelled = torch.tensor([[True, False], [False, False]])
    c2 = cand(probs, PixelWindow(100, 200, 102, 202), labelled, gt=gt)
    assert max_error_gt_point(c2, gen()) == (101, 200)


def test_ties_broken_randomly_and_only_among_ties():
    # Three pixels at p̄ = 0.5 (exact ties for max entropy); all others lower; one tie labelled.
    p = torch.full((4, 5), 0.1)
    tied = [(0, 1), (2, 3), (3, 4), (1, 0)]  # (row, col)
    for r, c_ in tied:
        p[r, c_] = 0.5
    labelled = torch.zeros(4, 5, dtype=torch.bool)
    labelled[1, 0] = True
    window = PixelWindow(10, 10, 15, 14)
    c = cand(p, window, labelled)
    picks = {entropy_point(c, gen(s)) for s in range(60)}
    allowed = {(10 + col, 10 + row) for row, col in tied[:3]}
    assert picks == allowed
    # Lowest entropy: now the ties are the many 0.1 pixels (0.9 would not tie exactly in float32).
    low = {lowest_entropy_point(c, gen(s)) for s in range(200)}
    assert len(low) > 5
    assert not (low & allowed)
    assert (10, 11) not in low  # labelled


def test_same_seed_same_choice():
    p = torch.full((2, 6, 6), 0.5)  # everything ties
    c = cand(p)
    assert [entropy_point(c, gen(s)) for s in range(10)] == [entropy_point(c, gen(s)) for s in range(10)]


def test_omega_exhausted_when_all_labelled():
    window = PixelWindow(0, 0, 2, 2)
    c = Candidate(torch.rand(2, 2, 2), window, torch.ones(2, 2, dtype=torch.bool),
                  gt_mask=torch.ones(2, 2), instance_id=42)
    for name, fn in STRATEGIES.items():
        with pytest.raises(OmegaExhausted, match="instance 42") as err:
            fn(c, gen())
        assert err.value.window == window, name
    c0 = Candidate(torch.zeros(0, 2, 2), window, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(OmegaExhausted):
        entropy_point(c0, gen())


def test_gt_strategies_need_the_mask():
    c = cand(torch.rand(2, 3, 3))
    assert NEEDS_GT == {"max_error_gt", "least_error_gt"}
    for name in NEEDS_GT:
        with pytest.raises(ValueError, match=name):
            STRATEGIES[name](c, gen())
        with pytest.raises(ValueError, match=name):
            choose_points([c], name, gen())
    # Even with K = 0: the requirement does not depend on the model's output.
    with pytest.raises(ValueError, match="max_error_gt"):
        max_error_gt_point(cand(torch.zeros(0, 3, 3)), gen())


def test_choose_points_batch_and_names():
    assert set(STRATEGIES) == set(DISPLAY_NAMES)
    assert DISPLAY_NAMES["max_error_gt"].endswith("*")
    c1 = cand(torch.tensor([[0.5, 0.0]]), PixelWindow(4, 4, 6, 5))
    c2 = cand(torch.tensor([[0.0], [0.45]]), PixelWindow(0, 9, 1, 11))
    assert choose_points([c1, c2], "entropy", gen()) == [(4, 4), (0, 10)]
    with pytest.raises(ValueError, match="unknown point strategy"):
        choose_points([c1], "entropy*", gen())
    assert choose_points([], "random", gen()) == []


def test_candidate_validation():
    w = PixelWindow(0, 0, 3, 2)
    with pytest.raises(ValueError, match="Ω"):
        Candidate(torch.zeros(1, 3, 3), w, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        Candidate(torch.zeros(1, 2, 3), w, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="gt_mask"):
        Candidate(torch.zeros(1, 2, 3), w, torch.zeros(2, 3, dtype=torch.bool), gt_mask=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="empty"):
        Candidate(torch.zeros(0), PixelWindow(0, 0, 0, 2), torch.zeros(2, 0, dtype=torch.bool))


def test_nan_scores_are_reported():
    p = torch.tensor([[[0.5, float("nan")]]])
    with pytest.raises(ValueError, match="NaN"):
        entropy_point(cand(p), gen())
