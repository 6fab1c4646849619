"""One selection pass over a dataset: prediction sets A and S, one point per instance inside Ω,
never a labelled pixel, reproducible per seed; boundary distances on a hand-made mask."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import tiny_model_config

from apis.data.loader import category_index, image_tensor, make_target
from apis.geometry import PixelWindow, hflip_window, omega
from apis.models import build_model
from apis.models.condinst import ARCHITECTURES
from apis.selection.select import boundary_distance, prediction_sets, select_points

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model(request):
    """Every architecture's prediction sets must pass the same selection tests."""
    torch.manual_seed(0)
    m = build_model(dataclasses.replace(tiny_model_config(), architecture=request.param))
    m.eval()
    return m


def test_mirrored_window_maps_each_column_to_its_flip():
    w = PixelWindow(3, 1, 7, 4)
    m = hflip_window(w, 10)
    assert (m.x0, m.x1, m.y0, m.y1) == (3, 7, 1, 4)
    w = PixelWindow(0, 0, 2, 1)
    assert hflip_window(w, 10) == PixelWindow(8, 0, 10, 1)


def test_set_s_concatenates_scales_and_flips_over_the_same_omega(model, small_train):
    im = small_train.images[0]
    target = make_target(im, category_index(small_train))
    target["windows"] = [omega(a.box, im.width, im.height) for a in im.pool]
    x = image_tensor(small_train, im)
    a = prediction_sets(model, [x], [target], "A")[0]
    s = prediction_sets(model, [x], [target], "S")[0]
    for maps_a, maps_s, win in zip(a, s, target["windows"], strict=True):
        assert maps_s.shape[1:] == (win.height, win.width) == maps_a.shape[1:]
        assert maps_s.shape[0] >= maps_a.shape[0]
        assert float(maps_s.min()) >= 0.0 and float(maps_s.max()) <= 1.0
    with pytest.raises(ValueError, match="prediction set"):
        prediction_sets(model, [x], [target], "Q")


@pytest.mark.parametrize("strategy", ["random", "entropy", "variance", "lowest_entropy", "max_error_gt"])
def test_one_point_per_instance_inside_omega_and_never_labelled(model, small_train, strategy):
    from apis.oracle import MaskOracle

    oracle = MaskOracle(small_train)
    labelled = {a.id: [(int(a.box[0]) + 1, int(a.box[1]) + 1)] for a in small_train.instances()}
    choices = select_points(model, small_train, labelled, strategy, step=1, seed=3, gt_masks=oracle.mask)
    again = select_points(model, small_train, labelled, strategy, step=1, seed=3, gt_masks=oracle.mask)
    assert [(c.x, c.y) for c in choices] == [(c.x, c.y) for c in again]
    by_id = {a.id: (a, im) for im in small_train.images for a in im.pool}
    assert sorted(c.instance_id for c in choices) == sorted(by_id)
    for c in choices:
        inst, im = by_id[c.instance_id]
        assert omega(inst.box, im.width, im.height).contains(c.x, c.y)
        assert (c.x, c.y) not in labelled[c.instance_id]
        if strategy != "random":
            assert c.k >= 0 and (c.p_mean is None) == (c.k == 0)


def test_oracle_strategies_need_masks(model, small_train):
    with pytest.raises(ValueError, match="ground-truth"):
        select_points(model, small_train, {}, "least_error_gt", step=1, seed=0)


def test_boundary_distance_on_a_square():
    mask = np.zeros((9, 9), np.uint8)
    mask[2:7, 2:7] = 1  # boundary ring: rows/cols 2 and 6
    assert boundary_distance(mask, 4, 4) == 2.0  # centre, two pixels from every side
    assert boundary_distance(mask, 2, 4) == 0.0  # on the boundary
    assert boundary_distance(mask, 0, 4) == 2.0  # outside, two columns left of it
    assert boundary_distance(np.zeros((3, 3), np.uint8), 1, 1) == float("inf")
