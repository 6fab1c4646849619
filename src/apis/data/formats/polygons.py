"""Polygons to masks with COCO's convention, the one every polygon format here shares.

Coordinates are pixels of the shown image over pixel edges: pixel (col i, row j) covers [i, i+1) × [j, j+1),
so the square [0, 0, 10, 0, 10, 10, 0, 10] fills columns and rows 0..9 (100 pixels). pycocotools'
``frPyObjects`` rasterises them; a writer that traces masks on pixel edges (or on a finer grid) is its exact
inverse. One polygon that joins several parts with zero-width connecting segments (there and back along one
line, as Ultralytics merges a multi-part object into one line) fills each part whole: crossing a segment twice
cancels out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from apis.data.sources import SourceObject


def polygons_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict:
    """The union of ``polygons`` (each ``[x1, y1, x2, y2, ...]``, at least 3 points, pixel units) as one
    compressed RLE (``counts`` bytes) of an ``height``×``width`` image. Vertices outside the image are
    clipped to it by the rasteriser."""
    # pycocotools reads a 4-number list as a box, never as a polygon: callers pass at least 6 numbers.
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
    return mask_utils.merge(rles) if len(rles) > 1 else rles[0]


def rle_union(rles: Sequence[dict]) -> dict:
    return mask_utils.merge(list(rles)) if len(rles) > 1 else rles[0]


def object_from_rle(rle: dict, category: str, source: str, iscrowd: bool = False) -> SourceObject | None:
    """A :class:`SourceObject` of a compressed RLE (``counts`` bytes or str), with its tight box and area; None
    when the mask is empty (a polygon too thin to cover a pixel centre's sample)."""
    obj = SourceObject.from_rle(rle, category, source, iscrowd)
    return obj if obj.area > 0 else None


def mask_rle(mask: np.ndarray) -> dict:
    """An H×W bool mask as compressed RLE (``counts`` bytes), for a union with polygon RLEs."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def circle_polygon(cx: float, cy: float, radius: float) -> list[float]:
    """A polygon of a circle of ``radius`` pixels about (cx, cy): vertices about a pixel apart along the rim
    (at least 16), so its fill differs from the disc only at the rim's pixels."""
    n = max(16, math.ceil(2 * math.pi * radius))
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1).ravel().tolist()
