"""How well each object is expected to fit the ellipse inscribed in its box, learned per dataset from the answers.

Why: early in the loop (P0 on the real sets) the exported masks are close to the ellipse, since the model learnt
its shapes from ellipses and one point per object; how good such a mask is depends on how ellipse-like its
object is: a person walking, arms and legs spread, fills a wide box far less than the ellipse says. Measured
on M0's exports (seed 0, every pool object), the true IoU of the exported mask ranks with the true IoU of
the object's ellipse at Spearman 0.89 on Penn-Fudan and 0.73 on DSB 2018, where the model's own belief in
its mask reaches 0.24 and 0.39. The ellipse's true IoU needs the GT; what is known is the box and the
answers. The ellipse never sees an answer, so every answer at a random point of the box is a held-out test of
it: a logistic regression on the box's geometry (:data:`FEATURES`), fitted to whether the ellipse is right at
each such answer, predicts per object the share of its box the ellipse gets right. Where the geometry does
not predict it (nuclei, the built-in shapes) the fit is nearly flat, and the score it multiplies keeps its
ranking (README, "Masks that prove themselves"). The same fit serves any other source that never sees an answer
(:func:`source_fit`): where the export draws its masks with GrabCut, how often GrabCut from the box alone is
right in boxes of each kind is the factor of the cut masks' scores.

Coordinates: boxes xyxy in original pixels; answers (x, y, label) at integer pixels, label 1 = on the object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from apis.data.records import CocoDataset
from apis.geometry import PixelWindow, omega
from apis.mask_checks import answer_agreement, answers_in
from apis.yardsticks import ellipse_at

#: Per object, from its box and the other boxes of its image (no pixel is read).
FEATURES = ("log aspect (w/h)", "|log aspect|", "log sqrt(area)", "share covered by another box",
            "log boxes in the image")

#: Fewer objects with an answer than this, or answers all alike: no fit, every object 1.0.
MIN_OBJECTS = 30

#: Ridge on the standardised features' weights (in units of the log-likelihood summed over the answers).
L2 = 1.0


def box_features(dataset: CocoDataset) -> tuple[list[int], np.ndarray]:
    """Pool annotation ids in file order and their N×F features (:data:`FEATURES`), unstandardised."""
    ids: list[int] = []
    rows: list[list[float]] = []
    for im in dataset.images:
        boxes = np.array([a.box for a in im.pool], dtype=np.float64).reshape(-1, 4)
        w = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
        h = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
        # Intersection of every pair, over the area of the row's box; the box itself left out.
        lo, hi = np.maximum(boxes[:, None, :2], boxes[None, :, :2]), np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        iw, ih = np.clip(hi - lo, 0, None).transpose(2, 0, 1)
        covered = iw * ih / (w * h)[:, None]
        np.fill_diagonal(covered, 0.0)
        aspect = np.log(w / h)
        for g, a in enumerate(im.pool):
            ids.append(a.id)
            rows.append([aspect[g], abs(aspect[g]), 0.5 * np.log(w[g] * h[g]), float(covered[g].max(initial=0.0)),
                         np.log(len(im.pool))])
    return ids, np.array(rows, dtype=np.float64).reshape(-1, len(FEATURES))


def ellipse_hits(dataset: CocoDataset,
                 answers: Mapping[int, Sequence[tuple[int, int, int]]]) -> dict[int, tuple[int, int]]:
    """Annotation id → (answers the inscribed ellipse gets right, answers) for every pool object with an answer
    inside its Ω (:func:`apis.geometry.omega`); answers outside it are left out. The ellipse is
    :func:`apis.yardsticks.ellipse_mask`'s, read at the answered pixels (:func:`apis.yardsticks.ellipse_at`)."""
    out: dict[int, tuple[int, int]] = {}
    for im in dataset.images:
        for a in im.pool:
            pts = answers.get(a.id)
            if not pts:
                continue
            win = omega(a.box, im.width, im.height)
            xs, ys, labels = answers_in(win, pts)
            if len(labels):
                out[a.id] = (int((ellipse_at(a.box, win, xs, ys) == labels).sum()), len(labels))
    return out


def fit_logistic(x: np.ndarray, hits: np.ndarray, trials: np.ndarray, l2: float = L2,
                 iterations: int = 50) -> np.ndarray:
    """Weights (intercept first, then one per column of ``x``) of a binomial logistic regression of ``hits``
    successes in ``trials`` on the N×F ``x``, ridge ``l2`` on all but the intercept, by Newton's method.
    Deterministic; the penalised log-likelihood is strictly concave, so the fit is unique."""
    design = np.hstack([np.ones((len(x), 1)), np.asarray(x, dtype=np.float64)])
    hits, trials = np.asarray(hits, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    ridge = np.full(design.shape[1], float(l2))
    ridge[0] = 0.0
    w = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        grad = design.T @ (hits - trials * p) - ridge * w
        hess = (design * (trials * p * (1.0 - p))[:, None]).T @ design + np.diag(ridge) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-8:
            break
    return w


def mask_hits(masks: Mapping[int, tuple[PixelWindow, np.ndarray]],
              answers: Mapping[int, Sequence[tuple[int, int, int]]]) -> dict[int, tuple[int, int]]:
    """Annotation id → (answers its mask gets right, answers) for every object of ``masks`` (id → (window,
    h×w bool mask over it)) with an answer inside its window; answers outside it are left out. Meant for a
    source that never saw an answer (GrabCut from the box alone), so every answer is a held-out test of it."""
    out: dict[int, tuple[int, int]] = {}
    for i, (win, mask) in masks.items():
        agree, n = answer_agreement(mask, win, answers.get(i, ()))
        if n:
            out[i] = (agree, n)
    return out


def ellipse_fit(dataset: CocoDataset, answers: Mapping[int, Sequence[tuple[int, int, int]]],
                min_objects: int = MIN_OBJECTS) -> dict[int, float]:
    """Pool annotation id → the predicted chance that the ellipse inscribed in its box is right at a random
    pixel of the box, in (0, 1), from :func:`fit_logistic` on the standardised :func:`box_features` and the
    ellipse's record at ``answers`` (which must be answers at random points of the box: a chosen point lies
    where the model hesitates, at the object's edge, and would teach the fit where the edges are, not how
    often the ellipse is right). Every object gets 1.0 when fewer than ``min_objects`` objects have an answer,
    or when the ellipse is right at all of them or at none (nothing to learn)."""
    return fit_record(dataset, ellipse_hits(dataset, answers), min_objects)


def source_fit(dataset: CocoDataset, answers: Mapping[int, Sequence[tuple[int, int, int]]],
               masks: Mapping[int, tuple[PixelWindow, np.ndarray]], min_objects: int = MIN_OBJECTS) -> dict[int, float]:
    """:func:`ellipse_fit` for another source that never saw an answer: pool annotation id → the predicted chance
    that its mask (``masks``: id → (window, mask), e.g. GrabCut from the box alone, for the answered objects or a
    sample of them) is right at a random pixel of the object's box, from the box's geometry. The prediction
    covers every pool object, with a mask or not. Why: where the export draws its masks with GrabCut (the
    built-in set), how often GrabCut from the box is right in boxes of this kind ranks the cut masks by their
    true IoU better than how often the ellipse is (README, "A mask the map cannot vouch for")."""
    return fit_record(dataset, mask_hits(masks, answers), min_objects)


def learnt(fit: Mapping[int, float] | None) -> bool:
    """Whether a fit of :func:`ellipse_fit` or :func:`source_fit` learnt anything: they give every object 1.0 when
    they did not."""
    return any(v < 1.0 for v in (fit or {}).values())


def fit_record(dataset: CocoDataset, record: Mapping[int, tuple[int, int]],
               min_objects: int = MIN_OBJECTS) -> dict[int, float]:
    """Pool annotation id → the chance of a hit predicted from :func:`box_features` by :func:`fit_logistic` on
    ``record`` (id → (hits, trials)); every object 1.0 when fewer than ``min_objects`` objects are in the record
    or the hits are all or none of the trials."""
    ids, feats = box_features(dataset)
    if not ids:
        return {}
    rows = [k for k, i in enumerate(ids) if i in record]
    hits = np.array([record[ids[k]][0] for k in rows], dtype=np.float64)
    trials = np.array([record[ids[k]][1] for k in rows], dtype=np.float64)
    if len(rows) < min_objects or hits.sum() in (0.0, trials.sum()):
        return dict.fromkeys(ids, 1.0)
    sd = feats.std(axis=0)
    z = (feats - feats.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    w = fit_logistic(z[rows], hits, trials)
    p = 1.0 / (1.0 + np.exp(-(w[0] + z @ w[1:])))
    return {i: float(v) for i, v in zip(ids, p, strict=True)}
