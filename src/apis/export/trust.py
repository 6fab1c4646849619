"""How far an exported mask can be trusted: its ``apis_score`` in [0, 1], higher = more trustworthy, and the
review list, the least trusted first. What each rule means to a reader of the file is in docs/people.md ("The
exported masks and their trust scores"); the measurements that chose them in docs/evidence.md.

The score of one mask (:func:`instance_trust`) is one of

* **belief** (:func:`trust_score`): how firmly the model believes the exported mask, ``2 · mean_Ω b − 1`` clipped
  at 0, b = p̄ on the mask's pixels and 1 − p̄ off them; times the detection's score for a detection fallback;
* **cuts**, for a mask GrabCut cut (``apis_refinement`` in :data:`CUT_REFINEMENTS`): the IoU of GrabCut's two cuts
  of the object, started from the model's map and from the box (:func:`cut_agreement`), times the same weight;
* **fit**, ``2 · f − 1``, where the map cannot vouch for the mask: an ellipse the map could not judge
  (``refine="auto"``: an object narrower than :data:`apis.export.candidates.MIN_MAP_CELLS` cells, or no map) and
  the box's cut kept because the map's cut disagreed with it (``"grabcut_box"``); f the fit below;

then multiplied by ``apis_shape_fit`` f: the chance, learnt from the answers at random points, that the
ellipse inscribed in the box is right at a random pixel of it (:func:`apis.shape_prior.ellipse_fit`), or for a
cut mask GrabCut's from the box (:func:`apis.shape_prior.source_fit`); 1 where too few answers fitted it. A
missing mask scores 0 and an accepted one 1 (:mod:`apis.export.checks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from apis.data.records import CocoDataset
from apis.export.results import InstanceExport
from apis.geometry import xyxy_to_xywh

#: The ``apis_refinement`` of a mask GrabCut cut; such a mask scores by :func:`cut_agreement`.
CUT_REFINEMENTS = ("grabcut", "grabcut_box")


@dataclass(frozen=True)
class Trust:
    """The score of one exported mask and how it was made: ``score`` the ``apis_score``; ``shape_fit`` its factor
    from the box's shape; ``score_from`` ``"belief"``, ``"cuts"`` or ``"fit"`` (module doc); ``fit_source`` whose
    fit ``shape_fit`` is, ``"ellipse"`` or ``"grabcut"``."""

    score: float
    shape_fit: float
    score_from: str
    fit_source: str


def trust_score(p_map: Tensor, mask: np.ndarray, weight: float = 1.0) -> float:
    """``weight · max(0, 2 · mean_Ω b − 1)`` with b = p on ``mask`` and 1 − p off it, for an h×w probability
    map and the h×w bool mask exported for it (module doc), in [0, 1]."""
    if p_map.numel() == 0:
        return 0.0
    on = torch.from_numpy(np.asarray(mask, dtype=bool))
    p = p_map.float()
    belief = float(torch.where(on, p, 1.0 - p).mean())
    return min(max(weight * (2.0 * belief - 1.0), 0.0), 1.0)


def cut_agreement(from_map: np.ndarray, from_box: np.ndarray) -> float:
    """IoU of GrabCut's two cuts of one object (h×w bool over Ω), started from the model's map and from the box;
    0 when both are empty. Where the image's colours set the object apart, both starts end on the same segment;
    where they do not (a neighbour or the background of the object's colours), the two starts end apart, and
    whichever is exported is a guess: the score of a refined mask (module doc)."""
    union = np.logical_or(from_map, from_box).sum()
    return float(np.logical_and(from_map, from_box).sum() / union) if union else 0.0


def instance_trust(p_map: Tensor, mask: np.ndarray, weight: float, refinement: str | None, *,
                   cut_iou: float | None = None, shape: float = 1.0, cut_shape: float | None = None,
                   map_blind: bool = False) -> Trust:
    """The trust of the h×w bool ``mask`` exported over Ω with ``refinement`` (answers already forced), drawn from
    the h×w probability map ``p_map`` whose belief counts ``weight`` (the detection's score, 1 for a prediction
    set, 0 without a map).

    ``cut_iou``: the IoU of the two GrabCut cuts behind a cut mask (:func:`cut_agreement`), the score when
    ``refinement`` is one of them; ``shape``: the ellipse's fit in this box; ``cut_shape``: GrabCut's fit in it,
    the factor instead of ``shape`` for a cut mask (None where not fitted). ``map_blind``: the map could not judge
    this mask and the answers fitted ``shape``, so an ellipse scores ``2 · shape − 1``: a nucleus a few cells across
    is drawn by the upsampling kernel, and the model's belief in its ellipse says nothing (DSB 2018 at P0: 86 of 300
    objects, true IoU 0.80 at belief 0.36; README, "A mask the map cannot vouch for").
    """
    shape = min(max(float(shape), 0.0), 1.0)
    score_from, fit_source = "belief", "ellipse"
    if cut_iou is not None and refinement in CUT_REFINEMENTS:
        score, score_from = min(max(weight * cut_iou, 0.0), 1.0), "cuts"
        if cut_shape is not None:
            shape, fit_source = min(max(float(cut_shape), 0.0), 1.0), "grabcut"
            if refinement == "grabcut_box":
                # Kept because the cut from the map disagreed with it: the disagreement is the map's failing, and
                # the box's cut has only GrabCut's record in boxes like this one for it (built-in set; README, "A
                # mask the map cannot vouch for").
                score, score_from = 2.0 * shape - 1.0, "fit"
    elif refinement == "ellipse" and map_blind:
        score, score_from = 2.0 * shape - 1.0, "fit"
    else:
        score = trust_score(p_map, mask, weight)
    return Trust(max(score, 0.0) * shape, shape, score_from, fit_source)


def review_list(exports: Sequence[InstanceExport], dataset: CocoDataset, n: int) -> list[dict]:
    """The ``n`` least trustworthy instances, lowest score first (ties: annotation id), each with its
    annotation id, image id, file_name, box ([x, y, w, h] original pixels), score and reason."""
    if n <= 0:
        return []
    images = dataset.image_by_id()
    boxes = {a.id: a.box for a in dataset.instances()}
    ranked = sorted(exports, key=lambda e: (e.score, e.annotation_id))[:n]
    return [{"annotation_id": e.annotation_id, "image_id": e.image_id,
             "file_name": images[e.image_id].file_name, "box": xyxy_to_xywh(boxes[e.annotation_id]),
             "score": round(e.score, 6), "reason": review_reason(e)} for e in ranked]


def review_reason(e: InstanceExport) -> str:
    """Why a person should look at an instance, in words."""
    if e.reviewed:
        return f"accepted at step {e.review.step} by {e.review.reviewer}"
    if e.missing:
        return "missing: no prediction set and no detection overlapping the box"
    reasons = []
    if e.source == "no_model":
        reasons.append("no prediction set and no detection overlapping the box: the ellipse inscribed in the box")
        if e.score_from != "fit":
            return reasons[0]
    if e.source == "detection":
        reasons.append("no prediction set: mask of an overlapping detection")
    if e.area == 0:
        reasons.append("empty mask")
    if e.points_agree is not None and e.points_agree < 1.0:
        reasons.append(f"model contradicted {e.forced_pixels} of {e.points} answered points")
    if e.score_from == "cuts":
        why = "how far GrabCut's cuts from the model's map and from the box agree"
    elif e.score_from == "fit" and e.fit_source == "grabcut":
        why = (f"(2f − 1)·f, f = {e.shape_fit:.2f}: how often the answers say GrabCut from the box is right in a box "
               "of this shape; GrabCut started from the model's map disagreed with it")
    elif e.score_from == "fit":
        why = (f"(2f − 1)·f, f = {e.shape_fit:.2f}: how often the answers say the ellipse is right in a box of this "
               "shape; " + ("there is no map to judge it" if e.source == "no_model" else
                            "the model's map is too coarse to judge it"))
    else:
        why = "how firmly the model believes this mask inside the box"
    if e.shape_fit < 1.0 and e.score_from != "fit":
        whose = "GrabCut from the box is right in" if e.fit_source == "grabcut" else "an ellipse fits"
        why += f", times {e.shape_fit:.2f}: how often the answers say {whose} a box of this shape"
    reasons.append(f"score {e.score:.3f} ({why})")
    return "; ".join(reasons)
