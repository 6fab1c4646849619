"""Object sizes against the tiny preset's input, and the run config an import writes (``OUT/apis.yaml``).

Where the median object is under :data:`~apis.data.sizes.MIN_OBJECT_PIXELS` across at the tiny preset's
160-pixel input (nuclei: about 8), the config carries input sizes that bring it there, commented out: they
cost the square of the scale in training time, and the tiny preset already *tests* at up to twice its size
where objects are small (``model.max_test_upscale``, :mod:`apis.data.sizes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apis.data.sizes import MIN_OBJECT_PIXELS, SIZE_STEP, median_side_at

#: The tiny preset's input sizes (short side, long side cap), to judge object sizes against.
TINY_TEST_MIN_SIZE = 160
TINY_MAX_SIZE = 320


@dataclass(frozen=True)
class SizeAdvice:
    """Object sizes against the model's input. ``median_pixels``: median of √area over all objects, in the
    files' pixels; ``at_tiny``: the same at the tiny preset's input size; ``test_min_size`` /
    ``train_min_sizes`` / ``max_size``: input sizes at which it reaches :data:`MIN_OBJECT_PIXELS` (the
    tiny preset's own where it already does)."""

    median_pixels: float
    at_tiny: float
    test_min_size: int
    train_min_sizes: tuple[int, ...]
    max_size: int

    @property
    def too_small_for_tiny(self) -> bool:
        return self.at_tiny < MIN_OBJECT_PIXELS

    def lines(self) -> list[str]:
        head = (f"objects: median {self.median_pixels:.1f} px across in the files, {self.at_tiny:.1f} px at the "
                f"tiny preset's input ({TINY_TEST_MIN_SIZE} px short side)")
        if not self.too_small_for_tiny:
            return [head + "; the tiny preset's sizes fit"]
        return [head + f": under {MIN_OBJECT_PIXELS:g} px, two cells of the finest feature level (stride 8), "
                "where small objects lose detail",
                f"  set model.test_min_size: {self.test_min_size}, model.train_min_sizes: "
                f"{list(self.train_min_sizes)}, model.max_size: {self.max_size} to bring it there (in apis.yaml, "
                "commented out: training costs about the square of the scale; the tiny preset tests at up to twice its "
                "size by itself, model.max_test_upscale)"]


def size_advice(objects: Sequence[tuple[float, int, int]]) -> SizeAdvice | None:
    """Input sizes for objects given as (area in pixels, image width, image height). The model scales each
    image so its short side is ``test_min_size`` (long side at most ``max_size``); the advice is the smallest
    multiple of 32 at which the median object reaches :data:`MIN_OBJECT_PIXELS` across."""
    if not objects:
        return None
    at_tiny = median_side_at(objects, TINY_TEST_MIN_SIZE, TINY_MAX_SIZE)
    test = TINY_TEST_MIN_SIZE
    while median_side_at(objects, test, 2 * test) < MIN_OBJECT_PIXELS and test < 2048:
        test += SIZE_STEP
    train = tuple(test + d for d in (-32, -16, 0, 16, 32))
    median = float(np.median(np.sqrt(np.array([a for a, _, _ in objects], dtype=np.float64))))
    return SizeAdvice(median, at_tiny, test, train, 2 * test)


def run_config(paths: Mapping[str, Path], advice: SizeAdvice | None) -> str:
    """The text of ``OUT/apis.yaml``: the tiny preset on the imported splits, with the size advice commented."""
    lines = ["# Written by `apis data import`: the tiny preset on the imported splits.",
             "#   apis compare runs/NAME --config THIS_FILE", "preset: tiny",
             "data: {" + ", ".join(f"{k}: {str(Path(v).resolve())!r}" for k, v in paths.items()) + "}"]
    if advice is not None and advice.too_small_for_tiny:
        lines.append(f"# The median object is {advice.at_tiny:.1f} px across at the tiny preset's input; these sizes "
                     f"bring it to {MIN_OBJECT_PIXELS:g} px,")
        lines.append("# at about the square of the scale in training time (uncomment to use them):")
        lines.append(f"# model: {{test_min_size: {advice.test_min_size}, "
                     f"train_min_sizes: {list(advice.train_min_sizes)}, max_size: {advice.max_size}}}")
    return "\n".join(lines) + "\n"
