"""Resize and batch images inside the model, moving boxes, points and masks with them.

The model receives images at their original size (as torchvision detection models do) and returns
results in original pixels. Inside, each image is resized so that its shorter side is ``min_size``
(one value chosen at random per batch in training, for multi-scale training) without the longer side
exceeding ``max_size``, then the batch is zero-padded at the bottom/right to a multiple of
``size_divisible``. Padding keeps the origin, so the input frame of image ``b`` is its original frame
scaled by ``scale[b] = (sx, sy)``: a point at continuous original coordinate ``c`` lies at ``c * s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ImageBatch:
    """``tensors``: B×3×Hp×Wp padded batch in [0, 1]. ``sizes``: resized (h, w) of each image before
    padding. ``original_sizes``: (H, W) of each input. ``scales``: (sx, sy) original → input frame."""

    tensors: Tensor
    sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    scales: list[tuple[float, float]]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensors.shape[-2]), int(self.tensors.shape[-1])


def resized_shape(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    scale = min_size / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def batch_images(
    images: list[Tensor], min_size: int, max_size: int, size_divisible: int = 32
) -> ImageBatch:
    sizes, scales, originals, resized = [], [], [], []
    for im in images:
        if im.dim() != 3 or im.shape[0] != 3:
            raise ValueError(f"expected 3×H×W RGB image tensors, got shape {tuple(im.shape)}")
        h, w = int(im.shape[1]), int(im.shape[2])
        nh, nw = resized_shape(h, w, min_size, max_size)
        if (nh, nw) != (h, w):
            im = F.interpolate(im[None], size=(nh, nw), mode="bilinear", align_corners=False,
                               antialias=nh < h)[0]
        resized.append(im)
        originals.append((h, w))
        sizes.append((nh, nw))
        scales.append((nw / w, nh / h))
    ph = int(math.ceil(max(s[0] for s in sizes) / size_divisible) * size_divisible)
    pw = int(math.ceil(max(s[1] for s in sizes) / size_divisible) * size_divisible)
    batch = resized[0].new_zeros((len(images), 3, ph, pw))
    for b, im in enumerate(resized):
        batch[b, :, : im.shape[1], : im.shape[2]] = im
    return ImageBatch(batch, sizes, originals, scales)


def targets_to_input_frame(targets: list[dict], batch: ImageBatch, mask_stride: int) -> list[dict]:
    """Move each target into its image's input frame.

    In: ``boxes`` G×4 xyxy original pixels; ``labels`` G; optional ``points`` G×P×2 integer original
    pixels (x, y) with ``point_labels`` G×P (1 on object, 0 off, −1 padding); optional ``masks``
    G×H×W {0,1} with ``has_mask`` G bool.
    Out adds: ``boxes`` in input pixels, ``point_centres`` G×P×2 continuous input-frame coordinates of
    the pixel centres, ``mask_targets`` G×(Hp/stride)×(Wp/stride) float area fractions at the mask
    output stride (only when ``masks`` is given), and ``mask_target_weights`` the same for the optional
    ``mask_pixel_weights`` G×H×W uint8 (255 = 1; mean weight per cell, 1 over the padding).
    """
    out = []
    ph, pw = batch.padded_size
    for t, (sx, sy), (h, w) in zip(targets, batch.scales, batch.sizes, strict=True):
        scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=t["boxes"].device)
        nt = dict(t)
        nt["boxes"] = t["boxes"].float() * scale
        if "points" in t:
            nt["point_centres"] = (t["points"].float() + 0.5) * scale[:2]
        if "masks" in t and t["masks"].numel() > 0:
            m = F.pad(resize_bilinear(t["masks"], (h, w))[:, None], (0, pw - w, 0, ph - h))
            nt["mask_targets"] = F.avg_pool2d(m, mask_stride)[:, 0]
        if "mask_pixel_weights" in t:
            wt = resize_bilinear(t["mask_pixel_weights"], (h, w), unit=255.0)[:, None]
            nt["mask_target_weights"] = F.avg_pool2d(F.pad(wt, (0, pw - w, 0, ph - h), value=1.0), mask_stride)[:, 0]
        out.append(nt)
    return out


#: Resizing by at least this factor in rows gathers the rows the taps read before converting to float.
ROW_GATHER_FACTOR = 3


def _taps(n_in: int, n_out: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two source indices and their weights that bilinear resampling (``align_corners=False``, no
    antialiasing) reads for each of ``n_out`` output positions from ``n_in`` inputs, as ``F.interpolate``
    computes them: source coordinate ``(i + 0.5) · n_in / n_out − 0.5``, clamped at 0."""
    # The scale is a float32 quotient, and the coordinate is rounded once, as a fused multiply-add gives it: in
    # plain float32 arithmetic a 520-row mask shifts taps by up to 3e-5, against 6e-8 (one ulp) this way.
    scale = float(torch.tensor(n_in, dtype=torch.float32) / n_out)
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).float().clamp_(min=0)
    i0 = src.long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    w1 = src - i0
    return i0.to(device), i1.to(device), (1.0 - w1).to(device), w1.to(device)


def resize_bilinear(stack: Tensor, size: tuple[int, int], unit: float = 1.0) -> Tensor:
    """Bilinear resize of a G×H×W stack (uint8 masks, or weights in 1/``unit``) to G×h×w float32:
    ``F.interpolate(stack[:, None].float() / unit, size, mode="bilinear", align_corners=False)[:, 0]``.

    Where the rows shrink by ``ROW_GATHER_FACTOR`` or more, only the two rows each output row reads are
    gathered and converted to float (the values then differ from ``F.interpolate``'s by float32 rounding,
    about 1e-7): a large DSB image holds dozens of nuclei's full-image masks, and converting them all at full
    resolution every iteration cost more than the rest of the targets. Smaller resizes (the built-in set,
    most real photos at the tiny preset's sizes) take ``F.interpolate`` itself, to the bit, as gathering costs
    more than it saves there (``benchmarks/target_resize.py``)."""
    h, w = size
    big_h = stack.shape[1]
    if big_h < ROW_GATHER_FACTOR * h:
        # A copy whenever it will be divided, so that a float stack (a cached target) is never changed itself.
        x = stack[:, None].to(torch.float32, copy=unit != 1.0)
    else:
        y0, y1, wy0, wy1 = _taps(big_h, h, stack.device)
        x = stack.index_select(1, y0).float().mul_(wy0[:, None])
        x = x.add_(stack.index_select(1, y1).float().mul_(wy1[:, None]))[:, None]
    if unit != 1.0:
        x.div_(unit)  # in place: fresh full-resolution pages cost more than the arithmetic
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
