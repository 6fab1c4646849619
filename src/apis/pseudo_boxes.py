"""Box-free APIS: the pool's boxes come from a trained detector instead of people.

:func:`pseudo_box_dataset` runs a detector (any model with the evaluation contract of
:class:`apis.models.condinst.CondInst`: ``model(images)`` → per image ``boxes`` N×4 xyxy original pixels,
``labels`` N 0-based class indices into the dataset's categories, ``scores`` N) over the images of a COCO
dataset and turns every detection scoring at least ``score_threshold`` into a *pseudo box*: a pool
annotation with the detection's box and category. The rest of the loop is unchanged: the written file is
an ordinary COCO json to name as ``data.train``.

Two modes, chosen by the input:

* **Simulation** (every non-crowd annotation of the input has a mask): the oracle still needs a GT mask
  to answer points about a pseudo box, so each pseudo box is matched one-to-one to a GT instance of the
  same image with box IoU ≥ ``match_iou``, greedily by detection score (COCOeval's rule: the most
  confident detection takes the free GT instance it overlaps most). Matching ignores categories: the
  answer to "is this pixel on the object in the box?" does not depend on the label, and a wrong label
  is the label noise a box-free pool really has (counted as ``wrong_category``). A matched pseudo box
  carries the GT instance's ``segmentation`` (so :class:`apis.oracle.MaskOracle` answers its points from
  the GT mask) and ``apis_gt_id``. Unmatched pseudo boxes (false positives) are dropped from the pool,
  since nothing could answer for them; unmatched GT instances (missed) are counted and listed in
  ``info.apis_missed_gt_ids``.
* **Real use** (no annotation of the input has a mask, e.g. a file of images with no annotations): every
  pseudo box goes into the pool without a segmentation and nothing is matched (box-only annotations of
  the input are replaced, not matched); people answer the points (``apis run --people``).
  A file where some non-crowd annotations have masks and others not is refused.

The output keeps the input's images (same ids, every image even without detections), categories (same
ids and order) and crowd regions (``iscrowd: 1``, passed through with their masks and ``apis_gt_id``).
Every annotation gets a new id, 1, 2, ... in image order, pseudo boxes of an image by descending score,
then its crowd regions. Per pseudo box: ``bbox`` [x, y, w, h] (the detection's box clipped to the image),
``area`` = the box area (what box-only COCO data has; the mask is not known to the learner),
``apis_detection_score``, and when matched ``apis_gt_id`` and ``apis_match_iou``. Written with
:func:`write_pseudo_boxes`, ``file_name`` entries are made relative to the output's folder so that the
file loads from where it is (``apis data check OUT.json`` with no ``--images``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision

from apis.batches import image_batches
from apis.data.coco import write_coco
from apis.data.records import CocoDataset, ImageRecord, Instance
from apis.geometry import xyxy_to_xywh

Progress = Callable[[int, int], None]
Box = tuple[float, float, float, float]


class PseudoBoxError(ValueError):
    """Pseudo boxes cannot be made; the message names the file or record and the fix."""


@dataclass(frozen=True)
class Detection:
    """One detection of one image: ``box`` xyxy in original pixels (clipped to the image), ``category_id``
    the COCO category id (mapped from the model's 0-based label), ``score`` in [0, 1]."""

    box: Box
    category_id: int
    score: float


@dataclass
class CategoryCounts:
    """Counts for one category. GT counts are by the GT instance's category, detection counts by the
    detection's category. ``wrong_category``: GT instances of this category matched by a pseudo box that
    carries another category."""

    name: str
    gt: int = 0
    matched: int = 0
    wrong_category: int = 0
    detections: int = 0
    false_positives: int = 0

    @property
    def missed(self) -> int:
        return self.gt - self.matched


@dataclass
class PseudoBoxResult:
    """The pool of a box-free run and how well the detector covered the GT (simulation only).

    ``coco`` is the COCO json object with ``file_name`` relative to ``info.apis_image_root`` (the input's
    image folder); :func:`write_pseudo_boxes` rewrites them relative to the output file.
    ``detections``: kept detections (score ≥ threshold, non-empty box after clipping). In simulation
    ``matched`` pseudo boxes form the pool, ``false_positives = detections − matched`` are dropped, and
    ``missed_gt_ids`` are the GT annotation ids no pseudo box matched. In real use every detection is in
    the pool and the GT counts are 0.
    """

    coco: dict
    simulated: bool
    score_threshold: float
    match_iou: float
    detections: int
    gt_instances: int
    matched: int
    false_positives: int
    wrong_category: int
    missed_gt_ids: list[int]
    per_category: dict[int, CategoryCounts] = field(default_factory=dict)

    @property
    def missed(self) -> int:
        return len(self.missed_gt_ids)

    @property
    def pool_size(self) -> int:
        return sum(1 for a in self.coco["annotations"] if not a.get("iscrowd"))

    @property
    def recall(self) -> float | None:
        """Share of GT pool instances matched by a pseudo box (recall at IoU ``match_iou``)."""
        return self.matched / self.gt_instances if self.simulated and self.gt_instances else None


# ------------------------------------------------------------------------------------------ matching
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of N×4 and M×4 xyxy boxes (continuous pixel coordinates) → N×M. Empty boxes have IoU 0."""
    a = torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    # torchvision's IoU is 0/0 for two empty boxes; an empty box matches nothing.
    return torchvision.ops.box_iou(a, b).nan_to_num(0.0).numpy()


def match_by_iou(
    det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, min_iou: float
) -> tuple[list[int | None], list[float]]:
    """One-to-one matching of detections to GT boxes of one image, greedy by score (COCOeval's rule).

    Detections in descending score order (ties: the earlier one) each take the still-free GT box with
    the highest IoU, if that IoU is ≥ ``min_iou``. Returns per detection (input order) the index of its
    GT box or None, and the IoU of the match (0.0 when unmatched). No GT box is matched twice.
    """
    n, g = len(det_boxes), len(gt_boxes)
    matches: list[int | None] = [None] * n
    ious = [0.0] * n
    if n == 0 or g == 0:
        return matches, ious
    iou = box_iou(det_boxes, gt_boxes)
    taken = np.zeros(g, dtype=bool)
    for d in np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable"):
        free = np.where(taken, -1.0, iou[d])
        j = int(free.argmax())
        if free[j] >= min_iou:
            taken[j] = True
            matches[d], ious[d] = j, float(iou[d, j])
    return matches, ious


# ----------------------------------------------------------------------------------------- detection
@torch.no_grad()
def detect(
    model: torch.nn.Module,
    dataset: CocoDataset,
    device: torch.device | str = "cpu",
    score_threshold: float = 0.3,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> dict[int, list[Detection]]:
    """Detections scoring ≥ ``score_threshold`` per image id, best first, boxes clipped to the image
    (boxes left empty by clipping are dropped)."""
    n_classes = getattr(getattr(model, "cfg", None), "num_classes", None)
    if n_classes is not None and n_classes != len(dataset.categories):
        raise PseudoBoxError(
            f"{dataset.json_path}: the detector predicts {n_classes} classes but the file has "
            f"{len(dataset.categories)} categories; train the detector on data with the same categories "
            "(same ids, names and order)")
    cat_ids = [c.id for c in dataset.categories]
    model.eval()
    out: dict[int, list[Detection]] = {}
    for batch in image_batches(dataset, device, batch_size, progress=progress):
        preds = model(batch.tensors)
        for im, pred in zip(batch.images, preds, strict=True):
            out[im.id] = _image_detections(im, pred, cat_ids, score_threshold, dataset)
    return out


def _image_detections(
    image: ImageRecord, pred: dict, cat_ids: list[int], score_threshold: float, dataset: CocoDataset
) -> list[Detection]:
    boxes = pred["boxes"].detach().cpu().double().reshape(-1, 4).numpy()
    labels = pred["labels"].detach().cpu().tolist()
    scores = pred["scores"].detach().cpu().double().tolist()
    dets = []
    for box, label, score in zip(boxes, labels, scores, strict=True):
        if score < score_threshold:
            continue
        if not 0 <= label < len(cat_ids):
            raise PseudoBoxError(f"{dataset.json_path}: image id {image.id}: the detector gave class {label}, but "
                                 f"the file has {len(cat_ids)} categories; use a detector trained on its categories")
        x0, y0 = max(float(box[0]), 0.0), max(float(box[1]), 0.0)
        x1, y1 = min(float(box[2]), float(image.width)), min(float(box[3]), float(image.height))
        if x1 > x0 and y1 > y0:
            dets.append(Detection((x0, y0, x1, y1), cat_ids[label], float(score)))
    dets.sort(key=lambda d: -d.score)  # stable: equal scores keep the model's order
    return dets


# --------------------------------------------------------------------------------------- the pool
def pseudo_box_dataset(
    model: torch.nn.Module,
    dataset: CocoDataset,
    device: torch.device | str = "cpu",
    score_threshold: float = 0.3,
    match_iou: float = 0.5,
    batch_size: int = 8,
    progress: Progress | None = None,
    detector: str | None = None,
) -> PseudoBoxResult:
    """Run ``model`` over ``dataset``'s images and build the box-free pool (see the module docstring).
    ``detector`` (e.g. the checkpoint path) is recorded in ``info.apis_pseudo_boxes``."""
    if not 0.0 <= score_threshold <= 1.0:
        raise PseudoBoxError(f"score threshold must be in [0, 1], got {score_threshold}")
    if not 0.0 < match_iou <= 1.0:
        raise PseudoBoxError(f"match IoU must be in (0, 1], got {match_iou}")
    simulated = _simulated(dataset)  # refuse a half-masked file before the detector runs
    detections = detect(model, dataset, device, score_threshold, batch_size, progress)
    return pseudo_boxes_from_detections(dataset, detections, score_threshold, match_iou, detector, simulated)


def _simulated(dataset: CocoDataset) -> bool:
    """True when every pool instance has a GT mask (and there is one); False when none has. Refuses a mix,
    where the pseudo boxes matched to mask-less instances could be answered by nobody."""
    pool = dataset.instances()
    with_mask = sum(a.segmentation is not None for a in pool)
    if 0 < with_mask < len(pool):
        raise PseudoBoxError(
            f"{dataset.json_path}: {len(pool) - with_mask} of {len(pool)} non-crowd annotations have no "
            "segmentation; for simulation give every instance a mask, for real box-free use drop the "
            "annotations (only images are needed)")
    return with_mask > 0


def pseudo_boxes_from_detections(
    dataset: CocoDataset,
    detections: dict[int, Sequence[Detection]],
    score_threshold: float,
    match_iou: float = 0.5,
    detector: str | None = None,
    simulated: bool | None = None,
) -> PseudoBoxResult:
    """The pool from given detections per image id (best first; see :func:`detect`). ``simulated``
    defaults to whether the dataset has GT masks."""
    if simulated is None:
        simulated = _simulated(dataset)
    names = dataset.category_names
    counts = {c.id: CategoryCounts(c.name) for c in dataset.categories}
    annotations: list[dict] = []
    missed: list[int] = []
    n_det = n_matched = n_wrong = 0
    for image in dataset.images:
        dets = list(detections.get(image.id, ()))
        n_det += len(dets)
        for d in dets:
            if d.category_id not in names:
                raise PseudoBoxError(f"{dataset.json_path}: image id {image.id}: detection category "
                                     f"{d.category_id} is not in the file's categories")
            counts[d.category_id].detections += 1
        gt = image.pool
        if simulated:
            matches, ious = match_by_iou(np.array([d.box for d in dets]), np.array([d.score for d in dets]),
                                         np.array([a.box for a in gt]), match_iou)
        else:
            matches, ious = [None] * len(dets), [0.0] * len(dets)
        if simulated:
            for a in gt:
                counts[a.category_id].gt += 1
        for d, j, iou in zip(dets, matches, ious, strict=True):
            if j is None:
                if simulated:  # nothing could answer points about it: not in the pool
                    counts[d.category_id].false_positives += 1
                    continue
                annotations.append(_pseudo_annotation(len(annotations) + 1, image.id, d, None, 0.0))
                continue
            g = gt[j]
            n_matched += 1
            counts[g.category_id].matched += 1
            if g.category_id != d.category_id:
                n_wrong += 1
                counts[g.category_id].wrong_category += 1
            annotations.append(_pseudo_annotation(len(annotations) + 1, image.id, d, g, iou))
        if simulated:
            hit = {j for j in matches if j is not None}
            missed.extend(a.id for k, a in enumerate(gt) if k not in hit)
        for a in image.instances:
            if a.iscrowd:
                annotations.append(_crowd_annotation(len(annotations) + 1, a))

    n_gt = sum(c.gt for c in counts.values())
    info = dict(dataset.info)
    info["apis_pseudo_boxes"] = {
        "source": str(Path(dataset.json_path).resolve()), "detector": detector, "simulated": simulated,
        "score_threshold": score_threshold, "match_iou": match_iou, "detections": n_det, "gt_instances": n_gt,
        "matched": n_matched, "missed": len(missed), "false_positives": n_det - n_matched if simulated else 0,
        "wrong_category": n_wrong,
    }
    info["apis_missed_gt_ids"] = missed
    info["apis_image_root"] = str(Path(dataset.image_root).resolve())
    coco = {
        "info": info,
        "images": [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
                   for im in dataset.images],
        "annotations": annotations,
        "categories": [{"id": c.id, "name": c.name} for c in dataset.categories],
    }
    return PseudoBoxResult(
        coco=coco, simulated=simulated, score_threshold=score_threshold, match_iou=match_iou, detections=n_det,
        gt_instances=n_gt, matched=n_matched, false_positives=n_det - n_matched if simulated else 0,
        wrong_category=n_wrong, missed_gt_ids=missed, per_category=counts,
    )


def _pseudo_annotation(ann_id: int, image_id: int, d: Detection, gt: Instance | None, iou: float) -> dict:
    x, y, w, h = xyxy_to_xywh(d.box)
    ann = {"id": ann_id, "image_id": image_id, "category_id": d.category_id, "bbox": [x, y, w, h],
           "area": w * h, "iscrowd": 0, "apis_detection_score": round(d.score, 6)}
    if gt is not None:
        if gt.segmentation is not None:
            ann["segmentation"] = gt.segmentation
        ann["apis_gt_id"] = gt.id
        ann["apis_match_iou"] = round(iou, 6)
    return ann


def _crowd_annotation(ann_id: int, a: Instance) -> dict:
    ann = {"id": ann_id, "image_id": a.image_id, "category_id": a.category_id, "bbox": xyxy_to_xywh(a.box),
           "area": a.area, "iscrowd": 1, "apis_gt_id": a.id}
    if a.segmentation is not None:
        ann["segmentation"] = a.segmentation
    return ann


def write_pseudo_boxes(result: PseudoBoxResult, out: str | os.PathLike) -> Path:
    """Write the pool to ``out`` (atomically) with ``file_name`` entries relative to ``out``'s folder, so
    the file loads from where it is; returns the path."""
    out = Path(out)
    folder = out.parent.resolve()
    coco = dict(result.coco)
    info = dict(coco["info"])
    root = Path(info.pop("apis_image_root"))
    images = []
    for im in coco["images"]:
        path = root / im["file_name"]
        try:
            name = os.path.relpath(path, folder)
        except ValueError:  # another drive (Windows): no relative path exists
            name = str(path)
        images.append({**im, "file_name": Path(name).as_posix()})
    coco["images"], coco["info"] = images, info
    return write_coco(coco, out)


__all__ = [
    "CategoryCounts",
    "Detection",
    "PseudoBoxError",
    "PseudoBoxResult",
    "box_iou",
    "detect",
    "match_by_iou",
    "pseudo_box_dataset",
    "pseudo_boxes_from_detections",
    "write_pseudo_boxes",
]
