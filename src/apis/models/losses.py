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


def dice_loss(mask_logits: Tensor, targets: Tensor, eps: float = 1e-5, weights: Tensor | None = None) -> Tensor:
    """CondInst's dice loss per mask: 1 − 2·Σpt / (Σp² + Σt²). ``mask_logits``, ``targets``: N×h×w
    (targets may be soft area fractions). ``weights`` (N×h×w, ≥ 0): each cell's weight in every sum
    (1 − 2·Σwpt / (Σwp² + Σwt²)), so a cell at 0 is left out and uniform weights change nothing. Returns N
    losses."""
    p = torch.sigmoid(mask_logits).flatten(1)
    t = targets.flatten(1)
    if weights is None:
        return _dice_1d(p, t, eps)
    w = weights.flatten(1)
    return 1.0 - 2.0 * (w * p * t).sum(1) / ((w * p * p).sum(1) + (w * t * t).sum(1) + eps)


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


def colour_affinity(images: Tensor, stride: int, dilation: int = 2) -> Tensor:
    """BoxInst's colour similarity between each cell and its 8 neighbours at ``dilation`` on the
    stride-``stride`` grid: exp(−‖Δ LAB‖ / 2). ``images``: B×3×H×W RGB in [0, 1] (H, W multiples of
    ``stride``). Returns B×8×(H/stride)×(W/stride) in (0, 1]."""
    lab = _rgb_to_lab(F.avg_pool2d(images, stride))
    diffs = _neighbour_diffs(lab, dilation)  # B×3×8×h×w
    return torch.exp(-diffs.norm(dim=1) * 0.5)


def pairwise_loss(mask_logits: Tensor, affinity: Tensor, inside: Tensor, threshold: float = 0.3,
                  dilation: int = 2) -> Tensor:
    """BoxInst's pairwise loss: neighbouring cells of similar colour (affinity ≥ ``threshold``) inside
    the box should take the same label; −log P(same) averaged over those edges.

    ``mask_logits`` N×h×w; ``affinity`` N×8×h×w (the colour affinity of each mask's image);
    ``inside`` N×h×w bool (cells of the box). Returns N losses."""
    log_fg = F.logsigmoid(mask_logits)[:, None]
    log_bg = F.logsigmoid(-mask_logits)[:, None]
    nb_fg = _neighbours(log_fg, dilation)[:, 0]  # N×8×h×w
    nb_bg = _neighbours(log_bg, dilation)[:, 0]
    log_same = torch.logaddexp(log_fg + nb_fg, log_bg + nb_bg)
    weight = ((affinity >= threshold) & inside[:, None]).float()
    return -(log_same * weight).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp(min=1.0)


def _neighbours(x: Tensor, d: int) -> Tensor:
    """B×C×h×w → B×C×8×h×w: the 8 neighbours at distance ``d`` (replicated at the border)."""
    p = F.pad(x, (d, d, d, d), mode="replicate")
    h, w = x.shape[-2:]
    shifts = [(dy, dx) for dy in (-d, 0, d) for dx in (-d, 0, d) if (dy, dx) != (0, 0)]
    return torch.stack([p[..., d + dy : d + dy + h, d + dx : d + dx + w] for dy, dx in shifts], dim=2)


def _neighbour_diffs(x: Tensor, d: int) -> Tensor:
    return x[:, :, None] - _neighbours(x, d)


def _rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1] (B×3×h×w) → CIE LAB (D65)."""
    c = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = rgb.new_tensor([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = torch.einsum("ij,bjhw->bihw", m, c) / rgb.new_tensor([0.95047, 1.0, 1.08883])[None, :, None, None]
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-6) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)
