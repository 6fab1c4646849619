"""Per-pixel uncertainty scores of a prediction set: pure, vectorised maths on tensors.

A *prediction set* for one instance is a K×h×w tensor of mask probabilities in [0, 1]: K maps
(anchors, models or scales; see docs/paper.md, "The method in one page") over the same h×w pixel window,
usually the instance's Ω in original-image pixels. Every function here returns an h×w map in that same window;
none of them knows about windows, labelled pixels or random choice (that is :mod:`apis.selection.points`).

Logarithms are natural, so the entropy of a fair coin is ``ln 2``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _as_float(x: Tensor) -> Tensor:
    # Half precision would turn many distinct scores into exact ties and make the argmax coarse;
    # scores are cheap, so compute them in at least float32.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_set(probs: Tensor, what: str) -> None:
    if probs.dim() != 3:
        raise ValueError(f"{what}: expected a K×h×w prediction set, got shape {tuple(probs.shape)}")
    if probs.shape[0] == 0:
        raise ValueError(
            f"{what}: the prediction set is empty (K = 0); the instance was not predicted, "
            "so there is no score (point strategies fall back to random)"
        )


def binary_entropy(p: Tensor) -> Tensor:
    """Entropy of a Bernoulli(p), elementwise, in nats: ``−p ln p − (1−p) ln(1−p)``.

    Any shape. Exactly 0 (never NaN) at p = 0 and p = 1: ``xlogy`` defines 0·ln 0 = 0, and ``p`` is
    clamped to [0, 1] first so that a mean that rounds a hair past 1 cannot give ln of a negative.
    """
    p = _as_float(p).clamp(0.0, 1.0)
    q = 1.0 - p
    return -(torch.xlogy(p, p) + torch.xlogy(q, q))


def mean_probability(probs: Tensor) -> Tensor:
    """p̄: the mean of a K×h×w prediction set over K, h×w. Raises ValueError when K = 0."""
    _check_set(probs, "mean_probability")
    return _as_float(probs).mean(dim=0)


def entropy_of_mean(probs: Tensor) -> Tensor:
    """H(p̄) for a K×h×w prediction set, h×w, in nats; the paper's entropy score (take the argmax)."""
    _check_set(probs, "entropy_of_mean")
    return binary_entropy(mean_probability(probs))


def variance(probs: Tensor) -> Tensor:
    """Disagreement Var_k(p^k): population variance (divide by K) over the K maps, h×w.

    With K = 1 this is the zero map; the variance strategy uses entropy instead in that case.
    """
    _check_set(probs, "variance")
    return torch.var(_as_float(probs), dim=0, correction=0)


def error_map(probs: Tensor, gt_mask: Tensor) -> Tensor:
    """|p̄ − gt| for a K×h×w prediction set and an h×w {0, 1} GT mask over the same window, h×w.

    The confidence of being wrong: 1 where the prediction is confidently wrong, 0 where it is
    confidently right. Uses the ground truth, so it serves the oracle-aware diagnostics only.
    """
    _check_set(probs, "error_map")
    if tuple(gt_mask.shape) != tuple(probs.shape[1:]):
        raise ValueError(
            f"error_map: GT mask shape {tuple(gt_mask.shape)} does not match the prediction set's "
            f"window {tuple(probs.shape[1:])}; crop the mask to the same window (Ω) first"
        )
    p_mean = mean_probability(probs)
    return (p_mean - gt_mask.to(device=p_mean.device, dtype=p_mean.dtype)).abs()
