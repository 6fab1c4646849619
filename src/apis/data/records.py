"""Typed records for a COCO instance-segmentation dataset.

Boxes are xyxy floats in original-image pixels (see :mod:`apis.geometry`). Masks are kept in the
file's own encoding (polygons or RLE) and decoded on demand with pycocotools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


@dataclass(frozen=True)
class Category:
    id: int
    name: str


@dataclass(frozen=True)
class Instance:
    """One annotation. ``segmentation`` is the raw COCO value (polygon list or RLE dict) or None."""

    id: int
    image_id: int
    category_id: int
    box: tuple[float, float, float, float]  # xyxy, original pixels
    area: float
    iscrowd: bool = False
    segmentation: Any = None

    def mask(self, height: int, width: int) -> np.ndarray:
        """Decode the GT mask to an H×W uint8 array (1 = object). Raises when there is none."""
        if self.segmentation is None:
            raise ValueError(f"annotation {self.id} has no segmentation; cannot decode a mask")
        return decode_segmentation(self.segmentation, height, width)


@dataclass(frozen=True)
class ImageRecord:
    id: int
    file_name: str
    width: int
    height: int
    instances: tuple[Instance, ...] = ()

    @property
    def pool(self) -> tuple[Instance, ...]:
        """Instances that take part in learning and point questions (crowd regions never do)."""
        return tuple(a for a in self.instances if not a.iscrowd)


@dataclass
class CocoDataset:
    """A validated COCO instances file and the folder holding its images."""

    json_path: Path
    image_root: Path
    images: list[ImageRecord]
    categories: list[Category]
    info: dict = field(default_factory=dict)

    def image_path(self, image: ImageRecord) -> Path:
        return self.image_root / image.file_name

    @property
    def category_names(self) -> dict[int, str]:
        return {c.id: c.name for c in self.categories}

    def image_by_id(self) -> dict[int, ImageRecord]:
        return {im.id: im for im in self.images}

    def instances(self, include_crowd: bool = False) -> list[Instance]:
        return [a for im in self.images for a in (im.instances if include_crowd else im.pool)]


def xywh_to_xyxy(box: tuple[float, float, float, float] | list[float]) -> tuple[float, float, float, float]:
    """COCO's [x, y, w, h] → (x0, y0, x1, y1), both over pixel edges."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def xyxy_to_xywh(box: tuple[float, float, float, float] | list[float]) -> list[float]:
    """(x0, y0, x1, y1) → COCO's [x, y, w, h], both over pixel edges."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO polygon list, uncompressed RLE or compressed RLE → H×W uint8 mask."""
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(np.uint8)


def encode_mask(mask: np.ndarray) -> dict:
    """H×W binary mask → compressed COCO RLE with ``counts`` as str (json-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
