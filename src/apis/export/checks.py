"""Which candidate (:mod:`apis.export.candidates`) an object's exported mask is, and what it must obey.

* **A person's accept wins over everything**: an object whose standing review decision is an accept gets the very
  mask accepted, its RLE copied unchanged, trust 1, no point forced (:func:`reviewed_instance`).
* **The fallbacks' order** (``refine="auto"``): the refined mask, the thresholded map and the ellipse are tried in
  turn; the first that passes :func:`apis.mask_checks.check_mask` (reaches the box's sides, agrees with the answers
  before they are forced) is kept, else the first that reaches the sides, else the ellipse (:func:`first_passing`).
  Other refinements keep their first candidate.
* **Answered points win over the model**: every pixel answered "yes" is set inside the mask and every "no" outside
  (:func:`force_answers`).
* **Never an empty mask for a box**: a mask left empty becomes the ellipse inscribed in the box, answers forced.
* **Missing**: no map at all and no check: the object keeps no ``segmentation`` (with ``refine="auto"`` it gets the
  ellipse instead, ``apis_source: "no_model"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from apis.data.records import ImageRecord, Instance, decode_segmentation, encode_mask
from apis.export.candidates import Candidate, candidate_masks, map_mask
from apis.export.results import Answer, ExportError, InstanceExport
from apis.export.trust import Vote, instance_trust, own_source
from apis.geometry import PixelWindow
from apis.mask_checks import check_mask, sides_reached
from apis.store import ReviewDecision
from apis.yardsticks import ellipse_mask


def finish_instance(
    inst: Instance, image: ImageRecord, win: PixelWindow, p_map: Tensor | None, weight: float, source: str,
    answers: Sequence[Answer], k: int, refined: tuple[np.ndarray, str] | None = None, checked: bool = False,
    cell_px: float | None = None, box_cut: np.ndarray | None = None, shape: float | None = None,
    cut_fit: float | None = None,
) -> tuple[InstanceExport, dict | None]:
    """The exported mask of one object and its :class:`InstanceExport`.

    ``p_map``: the h×w probability map over ``win`` (None: the model gave none), its trust ``weight`` and
    ``source`` (:func:`apis.export.candidates.instance_map`); ``refined``: GrabCut's mask (h×w bool over ``win``)
    and its ``apis_refinement`` (:func:`apis.export.candidates.pick_refinement`); ``checked``: ``refine="auto"``,
    candidates judged in the module doc's order; ``cell_px``: the side of one cell of the mask logits in pixels
    (:func:`apis.export.candidates.logit_cell_px`). The trust score's votes (:mod:`apis.export.trust`): ``shape``,
    the fitted chance that the ellipse in the box is right at a pixel of it (None: not fitted); ``box_cut``,
    GrabCut's cut from the box (h×w bool over ``win``) where the export cuts, with ``cut_fit`` its fitted chance
    (None: not fitted, and the cut is no vote). ``points_agree`` is always that of the thresholded ``p_map``, the
    model's own.

    Returns the :class:`InstanceExport` and the compressed RLE at the image's size (None when missing). Raises
    :class:`ExportError` for an answer outside Ω (store and dataset disagree).
    """
    check_answers_inside(inst, win, answers)
    if p_map is None and not checked:
        exp = InstanceExport(inst.id, inst.image_id, "missing", 0.0, None, len(answers), 0, 0, k)
        return exp, None
    if p_map is None:  # the model gave nothing: a mask the box alone draws beats none
        source, weight, p_map = "no_model", 0.0, torch.zeros(win.height, win.width)
    if tuple(p_map.shape) != (win.height, win.width):
        raise ExportError(f"annotation {inst.id}: the model gave a {tuple(p_map.shape)} map for a "
                          f"{win.height}x{win.width} Ω; a prediction set must cover Ω exactly")
    thresholded = map_mask(p_map)
    candidates, resolved = candidate_masks(thresholded, inst.box, win, refined, checked, cell_px)
    chosen = first_passing(candidates, win, answers) if checked else candidates[0]
    mask, refinement = chosen.mask.astype(np.uint8), chosen.refinement
    agree, forced = force_answers(thresholded.astype(np.uint8), win, answers)
    force_answers(mask, win, answers)
    if not mask.any():  # never an empty mask for a box: the ellipse inscribed in it, answers forced
        mask, refinement = ellipse_mask(inst.box, win).astype(np.uint8), "ellipse"
        force_answers(mask, win, answers)
    full = np.zeros((image.height, image.width), dtype=np.uint8)
    full[win.y0 : win.y1, win.x0 : win.x1] = mask
    # A map narrower than the object's cells is drawn by the upsampling kernel: it cannot judge the object.
    map_weight = weight if resolved else 0.0
    votes = [] if shape is None else [Vote(ellipse_mask(inst.box, win), shape)]
    if box_cut is not None and cut_fit is not None:
        votes.append(Vote(np.asarray(box_cut, dtype=bool), cut_fit))
    cut_fit = None if box_cut is None else cut_fit
    own_fit = own_source(refinement, shape, cut_fit)[1]
    score = instance_trust(p_map, mask.astype(bool), map_weight, votes, win, answers,
                           own_fit=1.0 if own_fit is None else own_fit)
    exp = InstanceExport(inst.id, inst.image_id, source, score,
                         agree / len(answers) if answers else None, len(answers), forced, int(full.sum()), k,
                         refinement=refinement, box_sides=sides_reached(mask.astype(bool)), map_weight=map_weight,
                         shape_fit=shape, cut_fit=cut_fit)
    return exp, encode_mask(full)


def first_passing(candidates: Sequence[Candidate], win: PixelWindow, answers: Sequence[Answer]) -> Candidate:
    """The first of ``candidates`` (masks over ``win``, in the order they are tried) that reaches its box's sides and
    agrees with ``answers`` before they are forced (:func:`apis.mask_checks.check_mask`), else the first that reaches
    the sides, else the last (the ellipse)."""
    checks = [check_mask(c.mask, win, answers, c.resolution) for c in candidates]
    return next((c for c, k in zip(candidates, checks, strict=True) if k.ok),
                next((c for c, k in zip(candidates, checks, strict=True) if k.passes_box), candidates[-1]))


def check_answers_inside(inst: Instance, win: PixelWindow, answers: Sequence[Answer]) -> None:
    """Raise :class:`ExportError` when an answer of ``inst`` lies outside its Ω ``win``: the store's points belong to
    another version of the dataset."""
    for x, y, _ in answers:
        if not win.contains(x, y):
            raise ExportError(
                f"annotation {inst.id} (image {inst.image_id}): answered pixel (x={x}, y={y}) lies outside its Ω "
                f"(columns {win.x0}..{win.x1 - 1}, rows {win.y0}..{win.y1 - 1}); the store's points belong to "
                "another version of this dataset: export with the train json the project was initialised from"
            )


def force_answers(mask: np.ndarray, win: PixelWindow, answers: Sequence[Answer]) -> tuple[int, int]:
    """Set every answered pixel of ``mask`` (h×w over ``win``) to its answer, in place.

    Returns (answers the mask already agreed with, pixels changed).
    """
    # One answer at a time: an object answered twice at one pixel counts its second answer against the first's.
    agree = changed = 0
    for x, y, label in answers:
        r, c = y - win.y0, x - win.x0
        if int(mask[r, c]) == int(label):
            agree += 1
        else:
            changed += 1
            mask[r, c] = int(label)
    return agree, changed


def reviewed_instance(inst: Instance, image: ImageRecord, decision: ReviewDecision,
                      answers: Sequence[Answer]) -> tuple[InstanceExport, dict]:
    """An accepted instance: the accepted RLE (``decision.mask``, the image's size) unchanged, trust 1, and
    the share of ``answers`` it agrees with. Raises :class:`ExportError` when the RLE does not fit the image
    (the store was reviewed against another version of the dataset)."""
    rle = decision.mask
    if list(rle.get("size", [])) != [image.height, image.width]:
        raise ExportError(
            f"annotation {inst.id} (image {inst.image_id}): the mask accepted at step {decision.step} by "
            f"{decision.reviewer} is {rle.get('size')} (height, width) but the image is "
            f"[{image.height}, {image.width}]; export with the train json the project was initialised from")
    rle = {"size": list(rle["size"]), "counts": rle["counts"]}  # a copy: the file is the store's text, not its object
    mask = decode_segmentation(rle, image.height, image.width)
    agree = sum(int(mask[y, x]) == int(label) for x, y, label in answers) if answers else 0
    exp = InstanceExport(inst.id, inst.image_id, "reviewed", 1.0, agree / len(answers) if answers else None,
                         len(answers), 0, int(mask.sum()), 0, review=decision)
    return exp, rle
