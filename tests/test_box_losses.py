"""BoxInst's projection and pairwise losses on hand-made masks."""

from __future__ import annotations

import math

import torch

from apis.models.losses import box_projection_loss, colour_affinity, pairwise_loss


def _logits(mask: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    return (mask.float() * 2 - 1) * scale


def test_projection_is_zero_for_a_mask_filling_its_box_and_not_for_a_frame_offset():
    h = w = 8
    box = torch.tensor([[8.0, 4.0, 24.0, 20.0]])  # input pixels; cells of stride 4: columns 2..5, rows 1..4
    filled = torch.zeros(1, h, w)
    filled[0, 1:5, 2:6] = 1
    assert box_projection_loss(_logits(filled), box, 4).item() < 1e-4
    shifted = torch.zeros(1, h, w)
    shifted[0, 3:7, 4:8] = 1
    # x projection: 2 of 4 columns overlap → dice 1 − 2·2/(4+4) = 0.5; same for y.
    assert math.isclose(box_projection_loss(_logits(shifted), box, 4).item(), 1.0, abs_tol=1e-3)


def test_pairwise_loss_penalises_label_changes_between_similar_neighbours_only():
    img = torch.zeros(1, 3, 32, 32)
    img[:, :, :, 16:] = 1.0  # black left half, white right half
    aff = colour_affinity(img, stride=4)  # 1×8×8×8
    assert aff.shape == (1, 8, 8, 8)
    inside = torch.ones(1, 8, 8, dtype=torch.bool)
    split_on_edge = torch.zeros(1, 8, 8)
    split_on_edge[0, :, 4:] = 1  # labels change exactly where the colour changes
    split_elsewhere = torch.zeros(1, 8, 8)
    split_elsewhere[0, :, 2:] = 1  # labels change inside the black half
    a = pairwise_loss(_logits(split_on_edge), aff, inside).item()
    b = pairwise_loss(_logits(split_elsewhere), aff, inside).item()
    assert a < 1e-3
    assert b > 1.0
