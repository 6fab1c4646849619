"""Augmentations that move an image and everything annotated on it together.

A sample is ``(image, target)``: image 3×H×W float in [0, 1]; target as described in
:func:`apis.data.loader.make_target` (boxes xyxy, points as integer pixels (x, y), masks H×W).
Resizing happens inside the model (:mod:`apis.models.transform`), so the only transform here is the
horizontal flip, which is exact on the pixel grid: column ``x`` becomes ``W − 1 − x`` and a box
``[x0, x1)`` becomes ``[W − x1, W − x0)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from apis.geometry import hflip_boxes


def hflip(image: Tensor, target: dict) -> tuple[Tensor, dict]:
    w = image.shape[-1]
    out = dict(target)
    out["boxes"] = hflip_boxes(target["boxes"], w)
    if "points" in target:
        pts = target["points"].clone()
        valid = target["point_labels"] >= 0
        pts[..., 0] = torch.where(valid, w - 1 - pts[..., 0], pts[..., 0])
        out["points"] = pts
    for key in ("masks", "mask_pixel_weights"):
        if key in target:
            out[key] = target[key].flip(-1)
    return image.flip(-1), out
