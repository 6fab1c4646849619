"""Which instances (or images) to spend annotation on: the scores of AFIS and of the fewer-points
variant, and spending a budget in whole units. Pure functions on tensors and lists, and
:func:`instance_scores`, which runs a model over the pool to get them.

Scores are per GT instance. Boxes are xyxy in original pixels; detections are a model's evaluation
output for the same image (``boxes`` N×4, ``labels`` N class indices, ``scores`` N in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou, generalized_box_iou

from apis.batches import image_batches
from apis.data.records import CocoDataset
from apis.selection.uncertainty import entropy_of_mean

# Loss of an instance no detection of its class overlaps: the worst GIoU loss (2) and the worst score.
UNDETECTED_GIOU_LOSS = 2.0
UNDETECTED_DETECTION_LOSS = 3.0


def detection_losses(gt_boxes: Tensor, gt_labels: Tensor, det_boxes: Tensor, det_labels: Tensor,
                     det_scores: Tensor) -> tuple[Tensor, Tensor]:
    """Per GT instance (G), the GIoU loss ``1 − GIoU`` of its best-matching detection (the detection of
    the same class with the highest IoU) and the detection loss ``GIoU loss + (1 − score)`` of that
    detection. Lower is better detected. Instances with no detection of their class get
    :data:`UNDETECTED_GIOU_LOSS` and :data:`UNDETECTED_DETECTION_LOSS`. Returns two float G tensors."""
    g = gt_boxes.shape[0]
    giou_loss = torch.full((g,), UNDETECTED_GIOU_LOSS)
    det_loss = torch.full((g,), UNDETECTED_DETECTION_LOSS)
    if g == 0 or det_boxes.shape[0] == 0:
        return giou_loss, det_loss
    gt_boxes, det_boxes = gt_boxes.float().cpu(), det_boxes.float().cpu()
    same = gt_labels.cpu()[:, None] == det_labels.cpu()[None, :]
    iou = box_iou(gt_boxes, det_boxes).masked_fill(~same, -1.0)
    best_iou, best = iou.max(1)
    found = best_iou >= 0
    giou = generalized_box_iou(gt_boxes, det_boxes).gather(1, best[:, None]).squeeze(1)
    giou_loss = torch.where(found, 1.0 - giou, giou_loss)
    det_loss = torch.where(found, 1.0 - giou + 1.0 - det_scores.float().cpu()[best], det_loss)
    return giou_loss, det_loss


def mean_box_entropy(probs: Tensor) -> float:
    """Mean over Ω of the entropy of the mean of a K×h×w prediction set (nats). An instance the model
    did not predict (K = 0) is as uncertain as can be: ln 2."""
    if probs.shape[0] == 0 or probs[0].numel() == 0:
        return math.log(2.0)
    return float(entropy_of_mean(probs).mean())


def group_mean(values: Sequence[float], groups: Sequence[int]) -> dict[int, float]:
    """Mean of ``values`` per group id (e.g. per image), for image-level selection."""
    sums: dict[int, list[float]] = {}
    for v, k in zip(values, groups, strict=True):
        sums.setdefault(k, []).append(v)
    return {k: sum(vs) / len(vs) for k, vs in sums.items()}


def spend(order: Sequence[int], costs: dict[int, float], budget: float) -> list[int]:
    """Take units in ``order`` while they fit in ``budget`` (seconds); a unit that does not fit is
    skipped and later, cheaper ones may still be taken. Never exceeds the budget; spends whole units."""
    taken, left = [], budget
    for unit in order:
        if costs[unit] <= left + 1e-9:
            taken.append(unit)
            left -= costs[unit]
    return taken


@dataclass(frozen=True)
class InstanceScore:
    """What a model says about one pool instance: see :func:`detection_losses` and
    :func:`mean_box_entropy` (NaN when not computed)."""

    instance_id: int
    giou_loss: float
    detection_loss: float
    box_entropy: float = math.nan


@torch.no_grad()
def instance_scores(model, dataset: CocoDataset, device: torch.device | str = "cpu", batch_size: int = 8,
                    entropy: bool = False, instance_ids: set[int] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict[int, InstanceScore]:
    """Score every pool instance (or those in ``instance_ids``) with one evaluation pass of ``model``
    (plus its prediction sets A when ``entropy``). Returns instance id → :class:`InstanceScore`."""
    from apis.selection.select import prediction_sets

    images = [im for im in dataset.images if any(instance_ids is None or a.id in instance_ids for a in im.pool)]
    model.eval()
    out: dict[int, InstanceScore] = {}
    for batch in image_batches(dataset, device, batch_size, images=images, targets=True, progress=progress):
        detections = model(batch.tensors)
        sets = (prediction_sets(model, batch.tensors, batch.model_targets(), "A") if entropy
                else [None] * len(batch.images))
        for im, t, det, per_image in zip(batch.images, batch.targets, detections, sets, strict=True):
            giou, loss = detection_losses(t["boxes"], t["labels"], det["boxes"], det["labels"], det["scores"])
            for g, a in enumerate(im.pool):
                if instance_ids is not None and a.id not in instance_ids:
                    continue
                h = mean_box_entropy(per_image[g]) if per_image is not None else math.nan
                out[a.id] = InstanceScore(a.id, float(giou[g]), float(loss[g]), h)
    return out
