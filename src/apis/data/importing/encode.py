"""Masks to :class:`~apis.data.sources.SourceObject` as they are read: compressed RLE at once, so an import
holds one image's rasters at a time, never every mask of the dataset."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from apis.data.sources import SourceObject


def column_major(raster: np.ndarray) -> np.ndarray:
    """``raster`` (H×W) as its transpose in C order: the layout pycocotools encodes without a copy. A label
    image is transposed once so that each object's comparison is already in that layout."""
    return np.ascontiguousarray(raster.T)


def object_from_columns(mask_t: np.ndarray, category: str, source: str, iscrowd: bool = False) -> SourceObject:
    """A :class:`SourceObject` from ``mask_t``, the W×H C-ordered transpose of a non-empty H×W bool mask in
    the shown frame (see :func:`column_major`). Its box is pycocotools' tight box over pixel edges."""
    fortran = mask_t.T.view(np.uint8)  # H×W, Fortran ordered: no copy
    return SourceObject.from_rle(mask_utils.encode(fortran), category, source, iscrowd)


def object_from_mask(mask: np.ndarray, category: str, source: str, iscrowd: bool = False) -> SourceObject:
    """As :func:`object_from_columns` from an H×W bool mask in any memory order (one copy at most)."""
    return object_from_columns(column_major(mask), category, source, iscrowd)
