"""How good an export is where the GT masks are known (simulation, benchmarks): the pool's mask IoU against them
and how well ``apis_score`` sorts the masks for review (Spearman's correlation with the true IoU, the share of the
worst masks among the least trusted)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from apis.data.records import CocoDataset
from apis.export.masks import export_masks
from apis.export.results import ExportError, ExportResult
from apis.store import Store


def pool_mask_iou(exported: ExportResult | Mapping, dataset: CocoDataset,
                  instance_ids: Collection[int] | None = None) -> float:
    """Mean mask IoU of the exported masks against the GT masks of ``dataset``'s pool (of the pool
    instances in ``instance_ids``, when given: a sample exported with the same ids).

    ``exported``: an :class:`ExportResult` or its COCO object. Every pool instance with a GT mask counts;
    one that was not exported (missing) counts as IoU 0. Raises :class:`ExportError` when the pool has
    no GT mask at all.
    """
    ious = pool_mask_ious(exported, dataset, instance_ids)
    if not ious:
        raise ExportError(f"{dataset.json_path}: no pool instance has a GT mask, so there is no mask IoU to "
                          "compute; pass a dataset with segmentations")
    return float(np.mean(list(ious.values())))


def pool_mask_ious(exported: ExportResult | Mapping, dataset: CocoDataset,
                   instance_ids: Collection[int] | None = None) -> dict[int, float]:
    """Annotation id → mask IoU of its exported mask against its GT mask, for every pool instance with a GT
    mask (in ``instance_ids``, when given), in dataset order; a missing mask counts as IoU 0."""
    coco = exported.coco if isinstance(exported, ExportResult) else exported
    by_id = {a["id"]: a for a in coco.get("annotations", [])}
    images = dataset.image_by_id()
    wanted = None if instance_ids is None else set(instance_ids)
    ious: dict[int, float] = {}
    for inst in dataset.instances():
        if inst.segmentation is None or (wanted is not None and inst.id not in wanted):
            continue
        im = images[inst.image_id]
        seg = by_id.get(inst.id, {}).get("segmentation")
        ious[inst.id] = 0.0 if not seg else _mask_iou(seg, inst.segmentation, im.height, im.width)
    return ious


def trust_rank_correlation(exported: ExportResult, ious: Mapping[int, float]) -> float | None:
    """Spearman's rank correlation between ``apis_score`` and the true IoU (``ious``, :func:`pool_mask_ious`)
    over the instances the model made (reviewed masks left out: their score is a person's, not the model's);
    None with fewer than 3 of them or when either side is constant. How well the trust score sorts masks
    for review."""
    pairs = _model_scored(exported, ious)
    if len(pairs) < 3:
        return None
    a, b = (_ranks(np.array(v, dtype=np.float64)) for v in zip(*pairs, strict=True))
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def worst_caught(exported: ExportResult, ious: Mapping[int, float], share: float = 0.1) -> float | None:
    """The share of the worst ``share`` of the masks by true IoU (``ious``) that the least trusted ``share`` by
    ``apis_score`` holds, over the instances the model made (reviewed masks left out, as in
    :func:`trust_rank_correlation`): 1.0 when a reviewer who opens the least trusted tenth finds every one of the
    worst tenth, ``share`` on average for a random order. None with fewer than ``1 / share`` instances. Ties keep
    the pool's order on both sides."""
    pairs = _model_scored(exported, ious)
    k = int(len(pairs) * share)
    if k < 1:
        return None
    scores, truth = (np.array(v, dtype=np.float64) for v in zip(*pairs, strict=True))
    least_trusted = set(np.argsort(scores, kind="stable")[:k].tolist())
    worst = set(np.argsort(truth, kind="stable")[:k].tolist())
    return len(least_trusted & worst) / k


def pool_iou_for_step(
    model_path: Path | str, dataset: CocoDataset, store: Store, step: int, device: torch.device | str = "cpu",
    prediction_set: str = "A", refine: str = "none",
) -> float:
    """Pool mask IoU of M(step): export with the answers of steps ≤ ``step`` and compare with the GT
    masks, in memory (no file is written). One prediction pass over the pool."""
    from apis.train import load_model

    model = load_model(Path(model_path), device)
    result = export_masks(model, dataset, store, device, prediction_set, max_step=step, refine=refine)
    return pool_mask_iou(result, dataset)


def _model_scored(exported: ExportResult, ious: Mapping[int, float]) -> list[tuple[float, float]]:
    """(``apis_score``, true IoU) of each instance the model made and ``ious`` has; reviewed masks left out, as
    their score is a person's."""
    return [(e.score, ious[e.annotation_id]) for e in exported.instances
            if not e.reviewed and e.annotation_id in ious]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of ``x``, 0-based; ties share their mean rank (as Spearman's coefficient needs)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=r, minlength=len(values))
    counts = np.bincount(inverse, minlength=len(values))
    return (sums / counts)[inverse]


def _mask_iou(a: object, b: object, height: int, width: int) -> float:
    """IoU of two COCO segmentations (polygons or RLE) of an image of ``height``×``width``; 1 when both are
    empty."""
    ra, rb = _rle(a, height, width), _rle(b, height, width)
    if mask_utils.area(ra) == 0 and mask_utils.area(rb) == 0:
        return 1.0
    return float(mask_utils.iou([ra], [rb], [0])[0, 0])


def _rle(segmentation: object, height: int, width: int) -> dict:
    """Any COCO segmentation as one compressed RLE (bytes counts), as pycocotools' ``annToRLE``."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        return {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    raise ExportError(f"unsupported segmentation of type {type(segmentation).__name__}")
