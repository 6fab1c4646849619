"""Mask losses that torchvision does not provide: PointSup's point loss and CondInst's dice loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from apis.geometry import sample_points


def point_logits(mask_logits: Tensor, centres: Tensor, frame_size: tuple[int, int]) -> Tensor:
    """Mask logits read at labelled points.

    ``mask_logits``: N×h×w logit maps covering a frame of ``frame_size`` = (H, W) input pixels.
    ``centres``: N×P×2 continuous (x, y) coordinates in that frame (pixel centres, ``(x + 0.5) · s``).
    Returns N×P logits by bilinear interpolation (``grid_sample``, ``align_corners=False``).
    """
    return sample_points(mask_logits, centres, frame_size)


def point_loss(mask_logits: Tensor, centres: Tensor, labels: Tensor, frame_size: tuple[int, int]) -> Tensor:
    """PointSup loss: binary cross-entropy of the logits at labelled points, averaged over the labelled
    points only (``labels`` N×P in {0, 1}; −1 marks padding and contributes nothing). Returns a scalar;
    zero (with a gradient path) when nothing is labelled."""
    logits = point_logits(mask_logits, centres, frame_size)
    valid = labels >= 0
    if not bool(valid.any()):
        return mask_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[valid], labels[valid].float(), reduction="mean")


def dice_loss(mask_logits: Tensor, targets: Tensor, eps: float = 1e-5) -> Tensor:
    """CondInst's dice loss per mask: 1 − 2·Σpt / (Σp² + Σt²). ``mask_logits``, ``targets``: N×h×w
    (targets may be soft area fractions). Returns N losses."""
    p = torch.sigmoid(mask_logits).flatten(1)
    t = targets.flatten(1)
    return 1.0 - 2.0 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + eps)


def box_projection_loss(mask_logits: Tensor, boxes: Tensor, stride: int) -> Tensor:
    """BoxInst's projection loss: the mask's maximum along each row and each column must match the
    box's (dice of the projections). ``mask_logits`` N×h×w at ``stride`` over the input frame;
    ``boxes`` N×4 xyxy input pixels. A cell belongs to the box when its centre lies inside it.
    Returns N losses."""
    n, h, w = mask_logits.shape
    ys = (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    xs = (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    in_x = ((xs[None] >= boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])).float()  # N×w
    in_y = ((ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])).float()  # N×h
    p = torch.sigmoid(mask_logits)
    return _dice_1d(p.amax(dim=1), in_x) + _dice_1d(p.amax(dim=2), in_y)


def _dice_1d(p: Tensor, t: Tensor, eps: float = 1e-5) -> Tensor:
    return 1.0 - 2.0 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + eps)
