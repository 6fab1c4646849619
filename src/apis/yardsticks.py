"""Masks that need no model: the yardsticks every model mask must beat.

A labelling team gets these for free from the boxes it already has (and the points it answered), so a
model's mask is worth keeping only where it is better:

* ``box``: the box filled (every pixel of Ω);
* ``ellipse``: the ellipse inscribed in the box;
* ``grabcut``: OpenCV's GrabCut started from the box (outside it definite background, inside probable
  foreground), on a crop with ``context`` box sizes of margin on each side: a tight crop gives its
  colour models too little background and it calls everything background;
* ``grabcut_points``: the same with the answered points as definite foreground / background seeds.

:func:`grabcut_mask` also takes a probability map (``prior``) inside the box; the export uses it to
refine a model's mask with the image's colours (:mod:`apis.export`).

Every mask is returned over the instance's Ω window (:func:`apis.geometry.omega`) as an h×w bool array
in original image pixels, with every answered point on its side.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from apis.geometry import PixelWindow, ellipse_radius_sq, omega

if TYPE_CHECKING:  # a GrabCut worker process imports this module: keep torch out of it
    from apis.data.loader import PseudoMask
    from apis.data.records import CocoDataset

METHODS = ("box", "ellipse", "grabcut", "grabcut_points")
# results.csv column of each method (apis.experiment)
COLUMNS = {m: f"pool_iou_{m}" for m in METHODS}

# GrabCut runs on crops at most this many pixels long (see grabcut_mask).
MAX_SIDE = 256

# A point answer as the yardsticks read it: (x, y, label) in original pixels.
Point = tuple[int, int, int]


def box_mask(win: PixelWindow) -> np.ndarray:
    """Every pixel of Ω."""
    return np.ones((win.height, win.width), dtype=bool)


def _in_ellipse(box: Sequence[float], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Whether the centres of pixels (``xs``, ``ys``: column and row indices, broadcast together) lie in the
    ellipse inscribed in ``box`` (xyxy, original pixels)."""
    return ellipse_radius_sq(box, xs, ys) <= 1.0


def ellipse_mask(box: Sequence[float], win: PixelWindow) -> np.ndarray:
    """Pixels of Ω whose centres lie in the ellipse inscribed in ``box`` (xyxy, original pixels). A box
    too thin for any centre to fall inside keeps its centre pixel, so the mask is never empty."""
    mask = _in_ellipse(box, np.arange(win.x0, win.x1)[None, :], np.arange(win.y0, win.y1)[:, None])
    if not mask.any():
        mask[win.height // 2, win.width // 2] = True
    return mask


def ellipse_at(box: Sequence[float], win: PixelWindow, xs: Sequence[int], ys: Sequence[int]) -> np.ndarray:
    """:func:`ellipse_mask` of ``box`` over ``win`` read at the pixels (``xs``, ``ys``: columns and rows inside
    ``win``), without drawing the mask where its fallback pixel cannot be needed: a box at least 2 px each way
    whose centre pixel lies in ``win`` holds that pixel's centre (within half a pixel of the box's centre)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    xs, ys = np.asarray(xs), np.asarray(ys)
    if min(x1 - x0, y1 - y0) >= 2.0 and win.contains(int(np.floor((x0 + x1) / 2)), int(np.floor((y0 + y1) / 2))):
        return _in_ellipse(box, xs, ys)
    return ellipse_mask(box, win)[ys - win.y0, xs - win.x0]


def grabcut_mask(
    image: np.ndarray,
    box: Sequence[float],
    points: Iterable[Point] = (),
    prior: np.ndarray | None = None,
    context: float = 1.0,
    iterations: int = 5,
    max_side: int | None = MAX_SIDE,
) -> np.ndarray:
    """GrabCut inside ``box``, seeded by the answered ``points`` and optionally a ``prior``.

    ``image``: H×W×3 uint8 RGB. ``box``: xyxy original pixels. ``points``: (x, y, label) answers; label 1
    pixels are definite foreground, 0 definite background. ``prior``: an h×w probability map over Ω
    (the model's); pixels ≥ 0.5 start as probable foreground, the rest as probable background. Without it
    all of Ω starts as probable foreground. The crop around the box has ``context`` box sizes of margin
    on each side (clipped to the image), all definite background. A crop longer than ``max_side`` pixels
    is cut with GrabCut at that size (its cost grows with the pixels: about 1 s for a 160×160 crop of
    noise) and the result scaled back to the original pixels (None: always at full size). Returns an h×w
    bool mask over Ω;
    where GrabCut cannot run (no background pixel in the crop, or too few pixels to fit its colour
    models) it returns the prior thresholded at 0.5, else the box, with the points forced.
    """
    import cv2  # only the yardsticks and the export's refinement need OpenCV

    # One OpenCV thread, here too: its thread pool would not survive the fork of grabcut_pool's workers.
    cv2.setNumThreads(1)

    height, width = image.shape[:2]
    win = omega(tuple(float(v) for v in box), width, height)
    crop = context_window(win, width, height, context)
    seeds = np.full((crop.height, crop.width), cv2.GC_BGD, dtype=np.uint8)
    inner = (slice(win.y0 - crop.y0, win.y1 - crop.y0), slice(win.x0 - crop.x0, win.x1 - crop.x0))
    start = np.ones((win.height, win.width), dtype=bool) if prior is None else np.asarray(prior) >= 0.5
    seeds[inner] = np.where(start, cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    points = list(points)
    for x, y, label in points:
        if win.contains(x, y):
            seeds[y - crop.y0, x - crop.x0] = cv2.GC_FGD if label == 1 else cv2.GC_BGD
    fallback = start.copy()
    if (seeds == cv2.GC_BGD).any() and np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD)).any():
        pixels = np.ascontiguousarray(image[crop.y0 : crop.y1, crop.x0 : crop.x1, ::-1])  # OpenCV wants BGR
        scale = 1.0 if max_side is None else min(1.0, max_side / max(crop.width, crop.height))
        small = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
        if scale < 1.0:
            pixels = cv2.resize(pixels, small, interpolation=cv2.INTER_AREA)
            seeds = cv2.resize(seeds, small, interpolation=cv2.INTER_NEAREST)
            for x, y, label in points:  # a single answered pixel must survive the shrinking
                if win.contains(x, y):
                    sx = min(small[0] - 1, int((x - crop.x0 + 0.5) * scale))
                    sy = min(small[1] - 1, int((y - crop.y0 + 0.5) * scale))
                    seeds[sy, sx] = cv2.GC_FGD if label == 1 else cv2.GC_BGD
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut seeds its colour models with k-means from OpenCV's thread RNG: reseed it, so an object's
        # mask does not depend on what ran before (a resumed run must reproduce the same masks).
        cv2.setRNGSeed(0)
        try:
            out = cv2.grabCut(pixels, seeds, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
            # OpenCV ≥ 5 returns the mask; older versions write it into ``seeds`` and return it too.
            labels = out[0] if isinstance(out, tuple) else seeds
            fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
            if scale < 1.0:
                fg = cv2.resize(fg, (crop.width, crop.height), interpolation=cv2.INTER_LINEAR)
            fallback = fg[inner] >= 0.5
        except cv2.error:
            pass  # too few pixels for its colour models: keep the starting mask
    return force_points(fallback, win, points)


@dataclass(frozen=True)
class GrabCutJob:
    """One object's :func:`grabcut_mask`, cut out of its image so it can travel to another process:
    ``pixels`` is the crop of ``context`` box sizes around the box, and ``box``, ``points`` and ``window``
    are in that crop's frame; ``offset`` = (x, y) of the crop in the image. ``prior`` over Ω or None."""

    pixels: np.ndarray
    box: tuple[float, float, float, float]
    points: tuple[Point, ...]
    prior: np.ndarray | None
    offset: tuple[int, int]

    @staticmethod
    def of(image: np.ndarray, box: Sequence[float], points: Iterable[Point] = (), prior: np.ndarray | None = None,
           context: float = 1.0) -> GrabCutJob:
        height, width = image.shape[:2]
        crop = context_window(omega(tuple(float(v) for v in box), width, height), width, height, context)
        x0, y0 = crop.x0, crop.y0
        return GrabCutJob(np.ascontiguousarray(image[crop.y0 : crop.y1, crop.x0 : crop.x1]),
                          (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0),
                          tuple((x - x0, y - y0, label) for x, y, label in points), prior, (x0, y0))

    def run(self) -> np.ndarray:
        """The h×w mask over Ω, as :func:`grabcut_mask` on the whole image gives it."""
        return grabcut_mask(self.pixels, self.box, self.points, self.prior)


def context_window(win: PixelWindow, width: int, height: int, context: float) -> PixelWindow:
    """``win`` grown by ``context`` times its size on each side, clipped to the image."""
    mx, my = math.ceil(context * win.width), math.ceil(context * win.height)
    return PixelWindow(max(0, win.x0 - mx), max(0, win.y0 - my), min(width, win.x1 + mx), min(height, win.y1 + my))


def _run_job(job: GrabCutJob) -> np.ndarray:
    return job.run()


def _one_opencv_thread() -> None:
    import cv2

    cv2.setNumThreads(1)  # the processes are the parallelism


def run_grabcut(jobs: Sequence[GrabCutJob], pool: Executor | None = None) -> list[np.ndarray]:
    """:meth:`GrabCutJob.run` of every job, in order: here, or on the processes of ``pool``
    (:func:`grabcut_pool`)."""
    if pool is None or len(jobs) < 2:
        return [job.run() for job in jobs]
    return list(pool.map(_run_job, jobs, chunksize=max(1, len(jobs) // 32)))


@contextmanager
def grabcut_pool(workers: int, jobs: int) -> Iterator[Executor | None]:
    """A pool of ``workers`` processes for ``jobs`` GrabCuts, or None where starting processes (about a
    second, for the imports) would cost more than it saves. GrabCut holds one core for about 60 ms an
    object, and the phases that call it have the machine to themselves."""
    if workers <= 1 or jobs < 64:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Forked: the workers run OpenCV alone (one thread each), never torch, so the parent's torch thread pools
    # do not matter, and no caller needs an ``if __name__ == "__main__"`` guard as spawn would.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_one_opencv_thread) as ex:
        yield ex


def default_workers() -> int:
    """Processes for GrabCut: the machine's cores, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def force_points(mask: np.ndarray, win: PixelWindow, points: Iterable[Point]) -> np.ndarray:
    """``mask`` (over ``win``) with every answered point inside the window set to its label."""
    mask = mask.copy()
    for x, y, label in points:
        if win.contains(x, y):
            mask[y - win.y0, x - win.x0] = bool(label)
    return mask


def window_iou(pred: np.ndarray, win: PixelWindow, gt: np.ndarray) -> float:
    """IoU of ``pred`` (a mask over ``win``) with the full-image GT mask ``gt`` (H×W); 1 when both are
    empty. The GT outside the window counts, so a box that cuts the object off is charged for it."""
    full = np.zeros(gt.shape, dtype=bool)
    full[win.y0 : win.y1, win.x0 : win.x1] = pred
    g = gt.astype(bool)
    union = np.logical_or(full, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(full, g).sum() / union)


@dataclass(frozen=True)
class PoolSample:
    """The pool objects a yardstick is measured on: all of them up to ``max_objects``, else a fixed
    random sample of that many (the same for every row of a comparison, so rows stay paired)."""

    instance_ids: tuple[int, ...]
    pool_size: int

    @property
    def sampled(self) -> bool:
        return len(self.instance_ids) < self.pool_size


def pool_sample(instance_ids: Sequence[int], max_objects: int, seed: int = 0) -> PoolSample:
    ids = sorted(int(i) for i in instance_ids)
    if len(ids) <= max_objects:
        return PoolSample(tuple(ids), len(ids))
    rng = np.random.default_rng([seed, len(ids)])
    return PoolSample(tuple(sorted(rng.choice(ids, size=max_objects, replace=False).tolist())), len(ids))


@dataclass(frozen=True)
class Estimate:
    """Mean IoU over ``n`` objects and its standard error (0 for one object)."""

    mean: float
    se: float
    n: int

    @staticmethod
    def of(values: Sequence[float]) -> Estimate:
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            raise ValueError("no objects to average over")
        se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
        return Estimate(float(v.mean()), se, int(v.size))


def pool_ious(
    dataset: CocoDataset,
    sample: PoolSample,
    grabcut: Mapping[int, PseudoMask] | None = None,
    grabcut_points: Mapping[int, PseudoMask] | None = None,
) -> dict[str, Estimate]:
    """Mean IoU with the GT masks over the objects of ``sample``, per yardstick: ``box`` and ``ellipse``
    (made here), and ``grabcut`` / ``grabcut_points`` from the GrabCut masks given (instance id → mask
    over Ω; see :func:`apis.pseudo_masks.cached_grabcut_pseudo_masks`), left out when None."""
    wanted = set(sample.instance_ids)
    given = {m: v for m, v in (("grabcut", grabcut), ("grabcut_points", grabcut_points)) if v is not None}
    ious: dict[str, list[float]] = {m: [] for m in ("box", "ellipse", *given)}
    for image in dataset.images:
        for inst in image.pool:
            if inst.id not in wanted:
                continue
            gt = inst.mask(image.height, image.width)
            win = omega(inst.box, image.width, image.height)
            ious["box"].append(window_iou(box_mask(win), win, gt))
            ious["ellipse"].append(window_iou(ellipse_mask(inst.box, win), win, gt))
            for m, masks in given.items():
                pm = masks[inst.id]
                ious[m].append(window_iou(pm.mask, pm.window, gt))
    return {m: Estimate.of(v) for m, v in ious.items()}
