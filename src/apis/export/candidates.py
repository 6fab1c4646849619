"""The masks an object can get, each h×w over its Ω (pixels whose centres lie in its box), original pixels:

1. the **prediction set**'s map (the K×h×w maps selection scores, set ``A`` or ``S``): their mean p̄, thresholded
   at :data:`MASK_THRESHOLD`;
2. the **detection fallback** (K = 0: the model's own assignment matched no location to the object): the map of
   the best detection overlapping the box (:func:`best_detection`), cut to Ω;
3. **GrabCut refinements** of the map with the image's colours and the answers as seeds, started from the map and
   from the box, one of the two kept (:func:`pick_refinement`);
4. the **ellipse** inscribed in the box (:func:`apis.yardsticks.ellipse_mask`).

Which one is exported is judged in :mod:`apis.export.checks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from apis.data.records import ImageRecord, Instance
from apis.export.results import Answer, MaskModel
from apis.geometry import PixelWindow
from apis.models.transform import resized_shape
from apis.yardsticks import GrabCutJob, ellipse_mask, run_grabcut

#: p̄ above this is on the object (the threshold of :func:`apis.evaluate.predict` as well).
MASK_THRESHOLD = 0.5

#: Below this IoU between GrabCut started from the model's map and from the box, the box's is kept
#: (:func:`pick_refinement`); chosen on seed 0 of the built-in set (0.1–0.5 all within 0.005 of it), checked
#: on seeds 1 and 2.
REFINE_MIN_AGREEMENT = 0.3

#: With ``refine="auto"`` the model's thresholded map is a candidate only for objects whose smaller side spans
#: at least this many cells of the mask logits (stride :data:`~apis.models.condinst.MASK_STRIDE` at the
#: model's test size); narrower objects are drawn by the upsampling kernel, not by the model. Measured on DSB
#: 2018 nuclei at P0 (2,975 objects, median 2.1 cells): under 3 cells the map's mean IoU was 0.17–0.80 against
#: the ellipse's 0.81, from 3 cells on 0.815 against 0.79 (README, "Masks that prove themselves").
MIN_MAP_CELLS = 3.0


class Candidate(NamedTuple):
    """One mask an object can get: h×w bool over Ω, its ``apis_refinement`` (None: the map thresholded) and the
    finest detail its source draws, in pixels (the resolution its box sides are judged at)."""

    mask: np.ndarray
    refinement: str | None
    resolution: float


def instance_map(
    probs: Tensor, detections: dict | None, inst: Instance, classes: Mapping[int, int], win: PixelWindow,
) -> tuple[Tensor | None, float, str]:
    """The h×w probability map over Ω the mask comes from, the weight of its trust score, its source:
    the mean of the K×h×w prediction set ``probs`` (``"prediction_set"``, weight 1), else the best detection's
    mask (``"detection"``, weight its score), else None (``"missing"``, weight 0)."""
    if probs.shape[0] > 0:
        return probs.float().mean(dim=0).cpu(), 1.0, "prediction_set"
    if detections is not None:
        best = best_detection(detections, inst.box, classes[inst.category_id])
        if best is not None:
            masks = detections["masks"]
            p_map = masks[best, 0, win.y0 : win.y1, win.x0 : win.x1].float().cpu()
            return p_map, float(detections["scores"][best]), "detection"
    return None, 0.0, "missing"


def best_detection(detections: dict, box: Sequence[float], label: int) -> int | None:
    """Index of the detection to use for an instance without a prediction set, or None.

    Candidates are the detections whose box (xyxy, original pixels) overlaps ``box`` (IoU > 0); among
    them the same class index ``label`` first, then the highest score, then the highest IoU.
    """
    boxes = detections["boxes"].detach().float().cpu().reshape(-1, 4)
    if boxes.shape[0] == 0:
        return None
    ious = box_iou(torch.tensor([list(box)], dtype=torch.float32), boxes)[0]
    labels = detections["labels"].detach().cpu().tolist()
    scores = detections["scores"].detach().float().cpu().tolist()
    candidates = [i for i in range(boxes.shape[0]) if float(ious[i]) > 0.0]
    if not candidates:
        return None
    return max(candidates, key=lambda i: (labels[i] == label, scores[i], float(ious[i])))


def logit_cell_px(model: MaskModel, image: ImageRecord) -> float | None:
    """The side, in original pixels of ``image``, of one cell of the model's mask logits (stride
    :data:`~apis.models.condinst.MASK_STRIDE` at the model's test size, ``cfg.test_min_size`` and
    ``cfg.max_size``); None for a model without that configuration (its map is taken at any width)."""
    from apis.models.condinst import MASK_STRIDE

    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "test_min_size"):
        return None
    h, _ = resized_shape(image.height, image.width, cfg.test_min_size, cfg.max_size)
    return MASK_STRIDE * image.height / h


def cut_agreement(from_map: np.ndarray, from_box: np.ndarray) -> float:
    """IoU of GrabCut's two cuts of one object (h×w bool over Ω), started from the model's map and from the box;
    0 when both are empty. Where the image's colours set the object apart, both starts end on the same segment;
    where they do not (a neighbour or the background of the object's colours), the two starts end apart."""
    union = np.logical_or(from_map, from_box).sum()
    return float(np.logical_and(from_map, from_box).sum() / union) if union else 0.0


def pick_refinement(from_map: np.ndarray, from_box: np.ndarray,
                    min_agreement: float = REFINE_MIN_AGREEMENT) -> tuple[np.ndarray, str]:
    """The refined mask of one object and its ``apis_refinement``, from GrabCut started from the model's map
    (``from_map``) and from the box (``from_box``), both h×w bool over Ω with the same answers as seeds.

    The map's start wins (``"grabcut"``) unless the two overlap by less than ``min_agreement`` IoU; then the
    box's (``"grabcut_box"``). Why: where the model's map is empty or off the object, GrabCut started from
    it fits its colour models to the wrong pixels and shrinks to the answered "yes" pixels alone; on the
    built-in set that happened to about 7% of the pool at P0 (IoU 0.01 against 0.63 from the box), and
    falling back lifted the pool IoU from 0.72 to 0.76 (``benchmarks/refine_variants.py``; README).
    """
    if np.logical_or(from_map, from_box).any() and cut_agreement(from_map, from_box) < min_agreement:
        return np.asarray(from_box, dtype=bool), "grabcut_box"
    return np.asarray(from_map, dtype=bool), "grabcut"


def grabcut_refinements(
    objects: Sequence[tuple[int, np.ndarray, Sequence[float], Sequence[Answer], np.ndarray]],
    pool: Executor | None = None, box_cuts: Mapping[int, np.ndarray] | None = None,
) -> tuple[dict[int, tuple[np.ndarray, str]], dict[int, np.ndarray]]:
    """GrabCut's refinement of each object (:func:`pick_refinement`) and its cut from the box (h×w bool over Ω, a
    vote of its trust score, :mod:`apis.export.trust`), by annotation id.

    ``objects``: (annotation id, the image as H×W×3 uint8 RGB, the box xyxy in original pixels, its answers, the
    model's h×w probability map over Ω as the start). ``box_cuts``: annotation id → GrabCut's cut from the box with
    the same answers (h×w bool over Ω), already made elsewhere; the others are cut here. ``pool``: the processes
    of :func:`apis.yardsticks.grabcut_pool`, or None to cut here.
    """
    # Each object twice, started from the model's map and from the box (unless given), in one batch for the workers.
    box_cuts = box_cuts or {}
    uncut = [(iid, rgb, box, pts) for iid, rgb, box, pts, _ in objects if iid not in box_cuts]
    jobs = [GrabCutJob.of(rgb, box, pts, prior=prior) for _, rgb, box, pts, prior in objects]
    jobs += [GrabCutJob.of(rgb, box, pts) for _, rgb, box, pts in uncut]
    masks = run_grabcut(jobs, pool)
    from_box = {**box_cuts, **{iid: m for (iid, *_), m in zip(uncut, masks[len(objects) :], strict=True)}}
    refined = {iid: pick_refinement(from_map, from_box[iid])
               for (iid, *_), from_map in zip(objects, masks[: len(objects)], strict=True)}
    return refined, {iid: np.asarray(from_box[iid], dtype=bool) for iid, *_ in objects}


def map_mask(p_map: Tensor) -> np.ndarray:
    """The h×w probability map thresholded at :data:`MASK_THRESHOLD`: h×w bool."""
    return (p_map > MASK_THRESHOLD).numpy()


def candidate_masks(thresholded: np.ndarray, box: Sequence[float], win: PixelWindow,
                    refined: tuple[np.ndarray, str] | None = None, checked: bool = False,
                    cell_px: float | None = None) -> tuple[list[Candidate], bool]:
    """The candidates of one object in the order they are tried, and whether its map is one of them.

    The ``refined`` mask (:func:`pick_refinement`) when there is one; the ``thresholded`` map (:func:`map_mask`);
    with ``checked`` (``refine="auto"``) the map only for an object at least :data:`MIN_MAP_CELLS` cells of
    ``cell_px`` pixels across (:func:`logit_cell_px`; judged at that resolution), then the ellipse inscribed in
    ``box`` (xyxy, original pixels).
    """
    candidates = [] if refined is None else [Candidate(np.asarray(refined[0], dtype=bool), refined[1], 1.0)]
    resolved = not checked or cell_px is None or min(win.width, win.height) >= MIN_MAP_CELLS * cell_px
    if resolved:
        candidates.append(Candidate(thresholded, None, 1.0 if cell_px is None else cell_px))
    if checked:
        candidates.append(Candidate(ellipse_mask(box, win), "ellipse", 1.0))
    return candidates, resolved

