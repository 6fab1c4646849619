"""The test size that keeps small objects detectable (apis.data.sizes), on hand-computed sizes."""

from __future__ import annotations

import pytest

from apis.data.sizes import MIN_OBJECT_PIXELS, fitted_test_size, median_side_at


def test_median_side_follows_the_model_resize():
    # 20 px boxes in 320×320 images: the short side goes to 160, so they are 10 px across there; the long-side
    # cap wins for a 320×960 image at max 320 (scale 1/3).
    assert median_side_at([(400.0, 320, 320)] * 3, 160, 320) == pytest.approx(10.0)
    assert median_side_at([(900.0, 960, 320)], 160, 320) == pytest.approx(10.0)


def test_test_size_grows_in_steps_until_the_median_object_reaches_sixteen_pixels():
    objects = [(400.0, 320, 320)] * 5  # 10 px at 160: 192 → 12, 224 → 14, 256 → 16
    assert MIN_OBJECT_PIXELS == 16.0
    assert fitted_test_size(objects, 160, 320, 2.0) == (256, 512)


def test_test_size_stops_at_the_upscale_limit_and_leaves_fitting_objects_alone():
    tiny = [(64.0, 256, 256)] * 5  # 8 px boxes: 5 px at 160, would need 512
    assert fitted_test_size(tiny, 160, 320, 2.0) == (320, 640)
    assert fitted_test_size(tiny, 160, 320, 1.5) == (224, 448)
    assert fitted_test_size(tiny, 160, 320, 1.0) == (160, 320), "1 = never"
    big = [(100.0 * 100.0, 256, 256)] * 5  # 62.5 px at 160
    assert fitted_test_size(big, 160, 320, 2.0) == (160, 320)
    assert fitted_test_size([], 160, 320, 2.0) == (160, 320)
