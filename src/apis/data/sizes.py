"""How large a dataset's objects are at the model's input, and the test size that keeps them detectable.

The model scales each image so its short side is ``min_size`` and its long side at most ``max_size``
(:func:`apis.models.transform.batch_images`). An object under :data:`MIN_OBJECT_PIXELS` across there spans
under two cells of the finest feature level (stride 8) and one or two of the mask logits (stride 4): its
mask is drawn by the upsampling, not by the model. Scaling the *test* input up costs inference only (about
the square of the factor), and FPN's shared heads take the larger objects at a coarser level: on DSB 2018's
nuclei (median 9.5 px at the tiny preset's 160) M0's val mask AP went from 32.1 at 160 to 38.3 at 320 with
the same weights (README, "Small objects").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from apis.data.records import CocoDataset

#: The median object should be at least this many pixels across at the model's input: two cells of the
#: finest feature level (stride 8), where FCOS-style heads still place a positive location on it.
MIN_OBJECT_PIXELS = 16.0
#: Input sizes grow in these steps (the backbone's total stride).
SIZE_STEP = 32


def median_side_at(objects: Sequence[tuple[float, int, int]], min_size: float, max_size: float) -> float:
    """Median √area at the model's input of objects given as (area in pixels, image width, image height)."""
    areas = np.array([a for a, _, _ in objects], dtype=np.float64)
    short = np.array([min(w, h) for _, w, h in objects], dtype=np.float64)
    long = np.array([max(w, h) for _, w, h in objects], dtype=np.float64)
    return float(np.median(np.sqrt(areas) * np.minimum(min_size / short, max_size / long)))


def box_objects(dataset: CocoDataset) -> list[tuple[float, int, int]]:
    """(box area, image width, image height) of every pool object: what is known before any mask."""
    images = dataset.image_by_id()
    out = []
    for a in dataset.instances():
        x0, y0, x1, y1 = a.box
        out.append(((x1 - x0) * (y1 - y0), images[a.image_id].width, images[a.image_id].height))
    return out


def fitted_test_size(objects: Sequence[tuple[float, int, int]], min_size: int, max_size: int,
                     max_upscale: float) -> tuple[int, int]:
    """(test min size, max size): ``min_size`` grown in steps of :data:`SIZE_STEP` until the median object
    reaches :data:`MIN_OBJECT_PIXELS` across, at most ``max_upscale`` times ``min_size`` (``max_size`` grows
    by the same factor); unchanged where the objects already fit, without objects, or with ``max_upscale`` 1."""
    if not objects or max_upscale <= 1.0:
        return min_size, max_size
    limit = int(min_size * max_upscale)
    size = min_size
    while median_side_at(objects, size, max_size * size / min_size) < MIN_OBJECT_PIXELS and size + SIZE_STEP <= limit:
        size += SIZE_STEP
    return size, round(max_size * size / min_size)
