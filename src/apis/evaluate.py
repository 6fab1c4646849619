"""COCO evaluation (``segm`` and ``bbox``) of a model on a split, and COCO result files."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from apis.atomic import write_json_atomic
from apis.batches import image_batches
from apis.data.records import CocoDataset, encode_mask
from apis.geometry import xyxy_to_xywh

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class EvalResult:
    """Metrics in percent (COCO's 0–1 numbers × 100); −1 where COCO has no instances of a size."""

    segm: dict[str, float]
    bbox: dict[str, float]
    images: int
    seconds: float


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: CocoDataset,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    mask_threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """COCO result records (image_id, category_id, bbox xywh, score, segmentation RLE) for every image."""
    model.eval()
    cat_ids = [c.id for c in dataset.categories]
    results: list[dict] = []
    for batch in image_batches(dataset, device, batch_size, progress=progress):
        outs = model(batch.tensors)
        for im, out in zip(batch.images, outs, strict=True):
            masks = (out["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
            for box, label, score, mask in zip(out["boxes"].cpu().tolist(), out["labels"].cpu().tolist(),
                                               out["scores"].cpu().tolist(), masks, strict=True):
                results.append({
                    "image_id": im.id,
                    "category_id": cat_ids[label],
                    "bbox": [round(v, 2) for v in xyxy_to_xywh(box)],
                    "score": round(float(score), 5),
                    "segmentation": encode_mask(mask),
                })
    return results


def coco_metrics(gt: COCO, results: list[dict], iou_type: str) -> dict[str, float]:
    if not results:
        return dict.fromkeys(METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: round(float(v) * 100, 3) if v >= 0 else -1.0 for name, v in zip(METRICS, ev.stats[:6],
                                                                                      strict=True)}


def evaluate(
    model: torch.nn.Module,
    dataset: CocoDataset,
    device: torch.device | str = "cpu",
    results_json: Path | None = None,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Evaluate on every image of ``dataset``; optionally write the COCO result json. Mask AP is -1 (every metric)
    when an annotation of ``dataset`` has no segmentation."""
    t0 = time.time()
    results = predict(model, dataset, device, batch_size, progress=progress)
    if results_json is not None:
        write_json_atomic(results, results_json)
    with contextlib.redirect_stdout(io.StringIO()):  # parse the ground truth once for both IoU types
        gt = COCO(str(dataset.json_path))
    # Box-only ground truth (e.g. the pool people boxed, `apis init --images`) has no mask to compare with: mask AP
    # is then -1, COCO's "nothing to measure", where COCOeval would fail on the missing segmentation.
    masks = all(a.get("segmentation") for a in gt.dataset.get("annotations", []))
    return EvalResult(
        segm=coco_metrics(gt, results, "segm") if masks else dict.fromkeys(METRICS, -1.0),
        bbox=coco_metrics(gt, results, "bbox"),
        images=len(dataset.images),
        seconds=round(time.time() - t0, 2),
    )
