"""How far an exported mask can be trusted: its ``apis_score`` in [0, 1], higher = more trustworthy, and the
review list, the least trusted first. What it means to a reader of the file is in docs/people.md ("The exported
masks and their trust scores"); the measurements that chose it in docs/evidence.md.

**The score** (:func:`instance_trust`). ``apis_score`` is how much more of its box the exported mask is expected to
get right than wrong, ``2 · mean_Ω b − 1`` clipped at 0 with b = q on the mask's pixels and 1 − q off them, times
√f₀, f₀ the fitted chance that the mask's own kind of source (GrabCut from the box for a cut mask, else the ellipse
in the box) is right at a pixel of a box like this one. q, the chance that a pixel is on the object, adds in
log-odds the model's mean map p̄ (times the detection's score for a fallback, left out where the map is coarser than
the object or absent) and each mask no model drew, the ellipse inscribed in the box and, where the export cuts,
GrabCut's cut from the box, each counted as ± log(f / (1 − f)) with f its own fitted chance. The chances are
fitted on the answers at random points (:mod:`apis.shape_prior`; a source they have not fitted is left out, and
f₀ = 1), and an answered pixel's q is its answer.

Why one estimator with these votes: the chain of rules it replaced (the map's belief, the agreement of GrabCut's two
cuts, the fit alone for a mask the map cannot judge, each times a fit) used the same evidence one piece at a time
and ranked the masks less well by Spearman's correlation on all three development sets, the worst tenth caught
about even (docs/evidence.md, "Can the trust score rank the masks?"). Where the map is confident and wrong, the
votes of the sources that never saw it are what can say so. Why √f₀: the map is confident even where the box's
kind of object is hard (a person's spread limbs, in a box the ellipse fits badly), and f₀ says how hard; × f₀ itself
ranked Penn-Fudan's masks less well, × 1 the built-in set's and Penn-Fudan's (same evidence page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from apis.data.records import CocoDataset
from apis.export.results import Answer, InstanceExport
from apis.geometry import PixelWindow, xyxy_to_xywh

#: The ``apis_refinement`` of a mask GrabCut cut: its own kind of source is GrabCut from the box.
CUT_REFINEMENTS = ("grabcut", "grabcut_box")

#: Probabilities are clipped to [EPS, 1 − EPS] before their log-odds are taken: a map's 0 or 1 counts ±9.2, so
#: that no single source is certain beyond the others' reach.
EPS = 1e-4


@dataclass(frozen=True)
class Vote:
    """A mask no model drew (h×w bool over Ω) and ``fit``, the chance in (0, 1) that its source is right at a
    random pixel of a box like this one (:func:`apis.shape_prior.ellipse_fit`, :func:`apis.shape_prior.source_fit`)."""

    mask: np.ndarray
    fit: float


def log_odds(p: np.ndarray | float) -> np.ndarray:
    """log(p / (1 − p)) of ``p`` clipped to [:data:`EPS`, 1 − :data:`EPS`]."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def pixel_belief(p_map: Tensor | np.ndarray | None, map_weight: float, votes: Sequence[Vote],
                 win: PixelWindow | None = None, answers: Sequence[Answer] = ()) -> np.ndarray:
    """q: h×w float64, the chance that each pixel of Ω is on the object (module doc): σ(``map_weight`` · logit p̄
    + Σ ± logit f), the sign + on a vote's mask and − off it; the pixels of ``answers`` (x, y, label in original
    pixels, inside ``win``) take their labels. ``p_map``: the h×w mean map, None without one (then the votes
    decide alone, and with none q is 0.5: nothing is known)."""
    if p_map is None and not votes:
        raise ValueError("pixel_belief needs a map or a vote to know Ω's size")
    logit = np.zeros(tuple(votes[0].mask.shape if p_map is None else p_map.shape), dtype=np.float64)
    if p_map is not None and map_weight > 0:
        p = p_map.double().numpy() if isinstance(p_map, Tensor) else np.asarray(p_map, dtype=np.float64)
        logit += map_weight * log_odds(p)
    for v in votes:
        logit += np.where(v.mask, 1.0, -1.0) * log_odds(v.fit)
    q = 1.0 / (1.0 + np.exp(-logit))
    for x, y, label in answers:
        q[y - win.y0, x - win.x0] = float(label)
    return q


def trust_score(q: np.ndarray, mask: np.ndarray) -> float:
    """``max(0, 2 · mean_Ω b − 1)`` with b = q on ``mask`` and 1 − q off it, for the h×w chances ``q``
    (:func:`pixel_belief`) and the h×w bool mask exported, in [0, 1]."""
    if q.size == 0:
        return 0.0
    b = np.where(np.asarray(mask, dtype=bool), q, 1.0 - q).mean()
    return min(max(2.0 * float(b) - 1.0, 0.0), 1.0)


def instance_trust(p_map: Tensor | None, mask: np.ndarray, map_weight: float, votes: Sequence[Vote],
                   win: PixelWindow | None = None, answers: Sequence[Answer] = (), own_fit: float = 1.0) -> float:
    """The ``apis_score`` of the h×w bool ``mask`` exported over Ω (module doc): :func:`trust_score` under
    :func:`pixel_belief` of the h×w probability map ``p_map`` counted ``map_weight`` times (the detection's score,
    1 for a prediction set, 0 where it cannot judge the object), the ``votes`` and the ``answers``, times
    √``own_fit`` (f₀: the fitted chance of the mask's own kind of source; 1 where none was fitted)."""
    score = trust_score(pixel_belief(p_map, map_weight, votes, win, answers), mask)
    # Rounded: equal evidence over boxes of different sizes must tie (the review list then keeps the pool's order),
    # not be ranked by the rounding of a float sum.
    return round(score * float(np.sqrt(min(max(own_fit, 0.0), 1.0))), 9)


def own_source(refinement: str | None, shape_fit: float | None, cut_fit: float | None) -> tuple[str, float | None]:
    """The mask's own kind of source and its fitted chance f₀ (module doc): GrabCut from the box for a cut mask
    whose cut was fitted (``cut_fit`` not None), else the ellipse with ``shape_fit`` (None: not fitted)."""
    if refinement in CUT_REFINEMENTS and cut_fit is not None:
        return "GrabCut", cut_fit
    return "the ellipse", shape_fit


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
    if e.source == "detection":
        reasons.append("no prediction set: mask of an overlapping detection")
    if e.area == 0:
        reasons.append("empty mask")
    if e.points_agree is not None and e.points_agree < 1.0:
        reasons.append(f"model contradicted {e.forced_pixels} of {e.points} answered points")
    reasons.append(f"score {e.score:.3f}: {evidence_words(e)}")
    return "; ".join(reasons)


def evidence_words(e: InstanceExport) -> str:
    """What the score of ``e`` was drawn from, in words (module doc)."""
    votes = []
    if e.map_weight > 0:
        votes.append("the model's map" + ("" if e.map_weight == 1.0 else f" (times the detection's score "
                                                                       f"{e.map_weight:.2f})"))
    if e.shape_fit is not None:
        votes.append(f"the ellipse in the box (right at {e.shape_fit:.0%} of a box like this, say the answers)")
    if e.cut_fit is not None:
        votes.append(f"GrabCut from the box (right at {e.cut_fit:.0%} of a box like this)")
    if not votes:
        return "nothing vouches for this mask yet (no map that resolves it, too few answers to fit a source)"
    if e.map_weight == 0 and e.source != "no_model":
        votes.insert(0, "not the model's map (too coarse for this object)")
    words = "how much of its box the mask is expected to get right, judging by " + ", ".join(votes)
    name, own = own_source(e.refinement, e.shape_fit, e.cut_fit)
    if own is not None:
        words += f"; times √{own:.2f}, for how often {name} is right in such boxes"
    return words
