"""Masks as the product: one mask per pool instance from a trained model, as a drop-in COCO file.

For every pool instance (non-crowd annotation of the train split) :func:`export_masks` builds a mask
inside the instance's box:

1. **Prediction set** (the same K×h×w maps over Ω that selection scores, set ``A`` or ``S``): the mask
   is the mean p̄ of the K maps, thresholded (``p̄ > 0.5``), over Ω (pixels whose centres lie in the box).
2. **Detection fallback** (K = 0, the model's own assignment matched no location to the instance): the
   mask of the best detection of the model's evaluation forward whose box overlaps the instance's box
   (box IoU > 0; same category first, then highest score, then highest IoU), cut to Ω.
3. **Missing**: no prediction set and no overlapping detection. The annotation is kept *without* a
   ``segmentation`` and listed in :attr:`ExportResult.missing` and in the file's ``info.apis_missing``;
   nothing is dropped silently. With ``refine="auto"`` such an instance gets the ellipse inscribed in its box
   instead (``apis_source: "no_model"``, scored by the ellipse's fit alone, see ``apis_score``): on DSB 2018
   nuclei the model gave no map for 3% of the pool, which a missing mask charged IoU 0.

Answered points win over the model: every pixel answered "yes" is set inside the mask and every "no"
outside (:attr:`InstanceExport.forced_pixels` counts the pixels that changed).

A person's accept wins over everything: an instance whose standing review decision (of a step ≤
``max_step``, :meth:`apis.store.Store.reviews`) is an accept gets the very mask that was accepted, its RLE
copied unchanged (byte for byte in the file), whatever the model says now; no point is forced into it.

The file is the input COCO json (:func:`apis.data.coco.dataset_to_dict`: same images, categories,
annotation ids, image ids, category ids and boxes, in the same order; crowd annotations untouched) with
each exported pool annotation's ``segmentation`` replaced by a compressed RLE at the image's size and:

* ``area``: the exported mask's pixel count (COCO's convention: the area of the mask, not of the box);
  missing instances keep the input's area.
* ``apis_score`` in [0, 1], higher = more trustworthy: how firmly the model believes the mask that is
  exported, ``2 · mean_Ω b − 1`` clipped at 0, where b is p̄ on the mask's pixels and 1 − p̄ off them (so a
  certain map exported as it is scores 1, a map of coin flips 0, and a mask drawn from another source scores
  by how much the model agrees with it). For a detection fallback the map is the detection's single mask and
  the value is multiplied by the detection's score; missing instances score 0. An ellipse exported where the map
  cannot judge it (``refine="auto"``: an object narrower than :data:`MIN_MAP_CELLS` cells of the mask logits, or
  ``no_model``) scores ``2 · f − 1`` instead, f the answers' fitted chance that the ellipse is right in its box
  (``apis_shape_fit`` below; where the answers fitted nothing, the map's belief as before): the belief the
  answers give it. On DSB 2018 at P0 such nuclei were 86 of the 300 sampled, true IoU 0.80 against 0.87 for the
  rest, and the model's belief in them (0.36 against 0.78) filled the least trusted tenth with good masks. Why not the
  map's own certainty (``1 − mean_Ω H(p̄) / ln 2``, the score before): once the export draws some masks from
  the ellipse or GrabCut, the map's certainty says nothing about them; the belief in the exported mask ranks
  them better on the real sets (Spearman with the true IoU at P3, Entropy, seed 0: Penn-Fudan 0.67 against
  0.51, DSB 2018 0.50 against 0.33; at P0 0.28 / 0.30 against 0.23 / 0.28) but worse on the built-in set,
  where GrabCut refines a weak map (P0 0.12 against 0.34, P3 0.39 against 0.41). So a mask GrabCut cut
  (``apis_refinement`` ``"grabcut"`` or ``"grabcut_box"``) scores instead by how well GrabCut's two cuts of the
  object agree, started from the map and from the box (their IoU, :func:`cut_agreement`; times the detection's
  score for a detection fallback): where the colours set the object apart both starts end on the same segment,
  where they do not they end apart. On the built-in set (``make demo``'s models, seed 0) that ranks the masks
  by their true IoU with Spearman 0.45 at P0 and 0.45 / 0.50 at P3 (Entropy / Random), against 0.07 and
  0.35 / 0.31 with the belief (README, "Masks that prove themselves"). Either value is then multiplied by
  ``apis_shape_fit``: the chance, learnt from the answers at random points (:mod:`apis.shape_prior`), that the
  ellipse inscribed in the object's box is right at a random pixel of it, predicted from the box's shape, size
  and overlap with its neighbours. Early on the exported masks are nearly the ellipse and the belief says
  little about them: at P0 (M0, seed 0, every pool object) it lifts Spearman with the true IoU from 0.24 to
  0.62 on Penn-Fudan and leaves DSB 2018 (0.39) and the built-in set (0.45) as they were. A mask GrabCut cut
  is multiplied instead by the same kind of fit for GrabCut from the box alone (:func:`apis.shape_prior.source_fit`
  on its masks of the objects the colours were judged on; it never sees an answer either): how good a cut is
  depends on how often GrabCut is right in boxes of its kind, not on how ellipse-like they are. The box's cut,
  exported because the cut from the map disagreed with it (``"grabcut_box"``), scores ``2 · g − 1`` (then × g)
  with g that fit instead of the cuts' agreement, which is below :data:`REFINE_MIN_AGREEMENT` there by
  construction: the disagreement is the map's failing, and the box's cut has only GrabCut's record for it.
* ``apis_shape_fit``: that factor, in (0, 1]; 1 where the answers are too few to fit it (under 30 objects
  answered at random points) or the source is right at all of them or none; ``apis_fit_source``: whose fit it
  is, ``"ellipse"`` or ``"grabcut"``.
* ``apis_points_agree``: the fraction of the instance's answered points the model got right
  (``p̄ > 0.5`` equals the answer) before forcing; ``null`` when the instance has no answered point or
  is missing.
* ``apis_source``: ``"prediction_set"``, ``"detection"``, ``"no_model"``, ``"missing"`` or ``"reviewed"``
  (an accepted mask, kept as accepted; ``apis_score`` is then 1: a person vouched for it, and ``apis_points_agree`` is
  the share of the answered points the accepted mask agrees with); ``apis_forced_pixels``: pixels the
  answers changed (0 for a reviewed mask); ``apis_refinement``: how the image's colours refined the mask
  (``refine="grabcut"``): ``"grabcut"`` when it is GrabCut started from the model's map, ``"grabcut_box"``
  when it is GrabCut started from the box because the one started from the map disagreed with it
  (:func:`pick_refinement`), else ``null``.
* ``apis_review``: for a reviewed mask ``{"decision": "accept", "step": S, "reviewer": NAME}`` (S the step
  whose export was accepted), else ``null``.
* ``apis_points`` (written by :func:`export_masks_cli`): how many points of the instance were answered.

:func:`export_masks_cli` writes the file, or a folder in the layout people read (label images, mask folders,
YOLO-seg, COCO with its images; :mod:`apis.data.writers`) with one row per pool instance in ``objects.csv``.

``file_name`` entries stay relative to the input's image folder (the file is a drop-in replacement for
the input json); ``info.apis_image_root`` records that folder. Written elsewhere, check it with
``apis data check OUT --images DIR`` (or ``load_coco(OUT, image_root=DIR)``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor
from torchvision.ops import box_iou

from apis.atomic import write_json_atomic
from apis.batches import ImageBatch, image_batches
from apis.data.coco import dataset_to_dict, write_coco
from apis.data.loader import PseudoMask, category_index
from apis.data.records import CocoDataset, ImageRecord, Instance, decode_segmentation, encode_mask
from apis.data.writers import WriteResult
from apis.geometry import PixelWindow, omega, xyxy_to_xywh
from apis.layout import ModelNotFound, find_model
from apis.mask_checks import check_mask, sides_reached
from apis.models.transform import resized_shape
from apis.names import PREDICTION_SETS, REFINEMENTS, uses_ensemble
from apis.selection.select import prediction_sets
from apis.shape_prior import ellipse_fit, learnt, source_fit
from apis.store import ReviewDecision, Store
from apis.yardsticks import GrabCutJob, default_workers, ellipse_mask, grabcut_pool, run_grabcut

#: p̄ above this is on the object (the threshold of :func:`apis.evaluate.predict` as well).
MASK_THRESHOLD = 0.5

#: Below this IoU between GrabCut started from the model's map and from the box, the box's is kept
#: (:func:`pick_refinement`); chosen on seed 0 of the built-in set (0.1–0.5 all within 0.005 of it), checked
#: on seeds 1 and 2.
REFINE_MIN_AGREEMENT = 0.3
#: The ``apis_refinement`` of a mask GrabCut cut; such a mask scores by :func:`cut_agreement`.
CUT_REFINEMENTS = ("grabcut", "grabcut_box")

#: With ``refine="auto"`` the model's thresholded map is a candidate only for objects whose smaller side spans
#: at least this many cells of the mask logits (stride :data:`~apis.models.condinst.MASK_STRIDE` at the
#: model's test size); narrower objects are drawn by the upsampling kernel, not by the model. Measured on DSB
#: 2018 nuclei at P0 (2,975 objects, median 2.1 cells): under 3 cells the map's mean IoU was 0.17–0.80 against
#: the ellipse's 0.81, from 3 cells on 0.815 against 0.79 (README, "Masks that prove themselves").
MIN_MAP_CELLS = 3.0

#: An answer as (x, y, label): integer pixel (column, row) of the original image, 1 = on the object.
Answer = tuple[int, int, int]
Progress = Callable[[int, int], None]


class ExportError(ValueError):
    """Masks cannot be exported; the message names the file or record and the fix."""


class MaskModel(Protocol):
    """What the export needs from a model (a :class:`apis.models.condinst.CondInst` satisfies it).

    ``prediction_sets(images, targets)``: per image, per target instance, a K×h×w tensor of mask
    probabilities over the instance's Ω (``targets[b]["windows"]``), original pixels, K ≥ 0.
    ``model(images)``: per image a dict with ``boxes`` (N×4 xyxy original pixels), ``labels`` (N, 0-based
    class index), ``scores`` (N) and ``masks`` (N×1×H×W probabilities at the original size).
    ``images`` are 3×H×W float tensors in [0, 1] at their original size. Prediction set ``S`` also needs
    ``cfg.test_min_size`` and a ``min_size`` keyword of ``prediction_sets`` (see
    :func:`apis.selection.select.prediction_sets`).
    """

    def prediction_sets(self, images: list[Tensor], targets: list[dict]) -> list[list[Tensor]]: ...

    def __call__(self, images: list[Tensor]) -> list[dict]: ...


@dataclass(frozen=True)
class InstanceExport:
    """What the export made of one pool instance. ``score`` and ``points_agree`` as in the module doc;
    ``area`` in pixels (0 for a missing instance); ``k`` the size of its prediction set."""

    annotation_id: int
    image_id: int
    source: str  # "prediction_set", "detection", "no_model" (refine="auto"), "missing" or "reviewed"
    score: float
    points_agree: float | None
    points: int
    forced_pixels: int
    area: int
    k: int
    refinement: str | None = None  # "grabcut" / "grabcut_box" (pick_refinement), "ellipse", None: the map's threshold
    box_sides: int | None = None  # sides of the box the exported mask reaches (apis.mask_checks.sides_reached)
    shape_fit: float = 1.0  # the factor of ``score`` from the box's shape (apis.shape_prior, see fit_source)
    # What ``score`` measures before that factor: "belief" (the model's in the mask), "cuts" (GrabCut's two cuts
    # agree), "fit" (``2 · shape_fit − 1``: the answers' record of the mask's source alone, where the map could not
    # judge the mask or contradicted it)
    score_from: str = "belief"
    fit_source: str = "ellipse"  # whose fit ``shape_fit`` is: "ellipse", or "grabcut" (from the box) for a cut mask
    review: ReviewDecision | None = None  # the accept whose mask this is (source "reviewed")

    @property
    def missing(self) -> bool:
        return self.source == "missing"

    @property
    def reviewed(self) -> bool:
        return self.source == "reviewed"


@dataclass
class ExportResult:
    """The COCO json object (``coco``), one :class:`InstanceExport` per pool instance in file order, and
    the review list (the least trustworthy instances, see :func:`review_list`)."""

    coco: dict
    instances: list[InstanceExport]
    review: list[dict] = field(default_factory=list)
    written: WriteResult | None = None  # what a folder export wrote (export_masks_cli)

    @property
    def missing(self) -> list[int]:
        """Annotation ids of the pool instances that got no mask."""
        return [e.annotation_id for e in self.instances if e.missing]

    @property
    def forced_pixels(self) -> int:
        """Pixels changed by answered points, over all instances."""
        return sum(e.forced_pixels for e in self.instances)

    @property
    def forced_per_instance(self) -> dict[int, int]:
        """Annotation id → pixels changed by its answered points (instances with none left out)."""
        return {e.annotation_id: e.forced_pixels for e in self.instances if e.forced_pixels}


# --------------------------------------------------------------------------------------------- export
@torch.no_grad()
def export_masks(
    model: MaskModel,
    dataset: CocoDataset,
    store: Store | Mapping[int, Sequence[Answer]],
    device: torch.device | str = "cpu",
    prediction_set: str = "A",
    review: int = 0,
    progress: Progress | None = None,
    *,
    max_step: int | None = None,
    batch_size: int = 8,
    refine: str = "none",
    instance_ids: Collection[int] | None = None,
    reviews: Mapping[int, ReviewDecision] | None = None,
    trust_colours: bool | None = None,
    box_cuts: Mapping[int, np.ndarray] | None = None,
    cut_fit: Mapping[int, float] | None = None,
) -> ExportResult:
    """One mask per pool instance of ``dataset`` from ``model``, answered points forced, accepted masks kept
    (module doc).

    ``store``: the project's store (answers and standing review decisions of steps ≤ ``max_step``, all when
    None) or a mapping from annotation id to answers (x, y, label). ``reviews``: instance id → standing
    decision, instead of the store's (a mapping of answers has none); only accepts change the export.
    ``prediction_set``: ``A`` or ``S`` as in selection. ``review``: how many of the least trustworthy
    instances to list in ``ExportResult.review``.
    ``progress(done, total)`` is called after each batch of images. ``refine``: ``"none"``, or
    ``"grabcut"`` to refine each mask with the image's colours (:data:`REFINEMENTS`). ``instance_ids``:
    export only these pool instances (a measurement on a sample, see :func:`pool_mask_iou`); the others keep
    their input annotation and are left out of :attr:`ExportResult.instances`. Nothing is written to disk.
    ``refine="auto"``: GrabCut from the map where ``trust_colours`` (None: :func:`colours_trusted` on the
    answers at random points, :meth:`apis.store.Store.random_answers`; every answer of a mapping), else the
    map, each object checked (:func:`finish_instance`). ``box_cuts``: annotation id →
    GrabCut's mask from the box seeded with the same answers (h×w bool over Ω), already made elsewhere (the
    loop's yardstick); a refinement takes it instead of cutting the object again. ``cut_fit``: annotation id →
    the chance that GrabCut from the box alone is right at a random pixel of the box
    (:func:`apis.shape_prior.source_fit`), the factor of a cut mask's score; None: fitted here on GrabCut's masks
    of at most :data:`JUDGE_OBJECTS` answered objects, when the export cuts.
    """
    if refine not in REFINEMENTS:
        raise ExportError(f"unknown refinement {refine!r}; choose one of {', '.join(REFINEMENTS)}")
    if prediction_set not in PREDICTION_SETS:
        raise ExportError(f"unknown prediction set {prediction_set!r}; choose one of {', '.join(PREDICTION_SETS)}")
    if review < 0:
        raise ExportError(f"review must be >= 0 (instances to list), got {review}")
    answers = _answers(store, max_step)
    if reviews is None:
        reviews = store.reviews(max_step) if isinstance(store, Store) else {}
    if hasattr(model, "eval"):
        model.eval()
    classes = category_index(dataset)
    wanted = None if instance_ids is None else set(instance_ids)
    results: dict[int, tuple[InstanceExport, dict | None]] = {}
    accepted = {i: d for i, d in reviews.items() if d.decision == "accept" and (wanted is None or i in wanted)}
    for im in dataset.images:
        for inst in im.pool:
            if inst.id in accepted:
                results[inst.id] = reviewed_instance(inst, im, accepted[inst.id], answers.get(inst.id, ()))
    # The model sees only what no one has accepted: an image whose objects are all accepted is not forwarded.
    todo = {a.id for a in dataset.instances() if (wanted is None or a.id in wanted) and a.id not in accepted}
    images = [im for im in dataset.images if any(a.id in todo for a in im.pool)]
    # The answers at random points only, where a store says which they are: what judges the sources and the fit.
    judged = store.random_answers(max_step) if isinstance(store, Store) else answers
    shape = ellipse_fit(dataset, judged)
    cut = refine
    cuts_judged = None
    if refine == "auto":
        if trust_colours is None:
            trust_colours, cuts_judged = judge_colours(dataset, judged, todo)
        cut = "grabcut" if trust_colours else "none"
    if cut == "grabcut" and cut_fit is None:
        if cuts_judged is None:
            cuts_judged = judge_colours(dataset, judged, todo)[1]
        cut_fit = source_fit(dataset, judged, cuts_judged)
    workers = default_workers() if cut == "grabcut" else 1
    with grabcut_pool(workers, sum(len(im.pool) for im in images)) as pool:
        for batch in image_batches(dataset, device, batch_size, images=images, targets=True, progress=progress):
            results.update(_export_batch(model, batch, classes, answers, prediction_set, cut, pool, todo,
                                         checked=refine == "auto", box_cuts=box_cuts, shape=shape,
                                         cut_fit=cut_fit))
    coco = _coco_with_masks(dataset, results, prediction_set, max_step, refine)
    if refine == "auto":
        coco["info"]["apis_export"]["colours_trusted"] = bool(trust_colours)
    exports = [results[a.id][0] for a in dataset.instances() if a.id in results]
    return ExportResult(coco, exports, review_list(exports, dataset, review))


#: :func:`colours_trusted` judges GrabCut on at most this many answered objects (about 60 ms each).
JUDGE_OBJECTS = 300


def colours_trusted(dataset: CocoDataset, answers: Mapping[int, Sequence[Answer]],
                    instance_ids: Collection[int] | None = None) -> bool:
    """Whether GrabCut from the box (the image's colours, no answer as a seed) is the most accurate no-model
    source on the answered points (:func:`apis.pseudo_masks.judge_no_model_sources`), judged on a fixed sample
    of at most :data:`JUDGE_OBJECTS` answered objects. Without any answer: whether it passes the box check on
    most objects."""
    return judge_colours(dataset, answers, instance_ids)[0]


def judge_colours(dataset: CocoDataset, answers: Mapping[int, Sequence[Answer]],
                  instance_ids: Collection[int] | None = None,
                  ) -> tuple[bool, dict[int, tuple[PixelWindow, np.ndarray]]]:
    """:func:`colours_trusted` and GrabCut's masks from the box of the objects it was judged on (id → (Ω,
    mask)), from which :func:`apis.shape_prior.source_fit` learns how often it is right in boxes of each kind."""
    from apis.pseudo_masks import judge_no_model_sources

    sample = judged_sample(dataset, answers, instance_ids)
    if not sample:
        return False, {}
    choice, masks = judge_no_model_sources(None, dataset, answers, sample)
    return choice.chosen == "grabcut", masks["grabcut"]


def judged_sample(dataset: CocoDataset, answers: Mapping[int, Sequence[Answer]],
                  instance_ids: Collection[int] | None = None) -> tuple[int, ...]:
    """The objects :func:`judge_colours` cuts: a fixed sample of at most :data:`JUDGE_OBJECTS` of the pool's
    (``instance_ids``') answered objects; of all of them when none is answered."""
    from apis.yardsticks import pool_sample

    pool = [a.id for a in dataset.instances()] if instance_ids is None else list(instance_ids)
    ids = [i for i in pool if answers.get(i)] or pool
    return pool_sample(ids, JUDGE_OBJECTS).instance_ids if ids else ()


def _answers(store: Store | Mapping[int, Sequence[Answer]], max_step: int | None) -> dict[int, list[Answer]]:
    if isinstance(store, Store):
        return {i: [(p.x, p.y, p.label) for p in ps] for i, ps in store.points(max_step=max_step).items()}
    return {int(i): [(int(x), int(y), int(label)) for x, y, label in ps] for i, ps in store.items()}


def _export_batch(
    model: MaskModel, batch: ImageBatch, classes: Mapping[int, int], answers: Mapping[int, Sequence[Answer]],
    prediction_set: str, refine: str = "none", pool: Executor | None = None, wanted: set[int] | None = None,
    checked: bool = False, box_cuts: Mapping[int, np.ndarray] | None = None, shape: Mapping[int, float] | None = None,
    cut_fit: Mapping[int, float] | None = None,
) -> dict[int, tuple[InstanceExport, dict | None]]:
    """Annotation id → (its export, its RLE or None) for every pool instance of ``batch`` (in ``wanted``,
    when given); ``box_cuts`` as in :func:`export_masks`; ``shape``: annotation id → the factor of its trust
    score (:func:`apis.shape_prior.ellipse_fit`; 1.0 for an id it lacks); ``cut_fit``: the factor of a cut mask's
    score instead, where it was fitted (:func:`apis.shape_prior.source_fit`)."""
    chunk, targets, tensors = batch.images, batch.targets, batch.tensors
    sets = prediction_sets(model, tensors, batch.model_targets(), prediction_set)
    needs_detections = [b for b, per_image in enumerate(sets) if any(p.shape[0] == 0 for p in per_image)]
    detections: dict[int, dict] = {}
    if needs_detections:
        outs = model([tensors[b] for b in needs_detections])
        detections = dict(zip(needs_detections, outs, strict=True))
    cell_px = [logit_cell_px(model, im) for im in chunk]
    maps = []
    for b, (im, t) in enumerate(zip(chunk, targets, strict=True)):
        for g, (inst, win) in enumerate(zip(im.pool, t["windows"], strict=True)):
            if wanted is not None and inst.id not in wanted:
                continue
            maps.append((b, im, inst, win, int(sets[b][g].shape[0]),
                         *_instance_map(sets[b][g], detections.get(b), inst, classes, win)))
    refined: dict[int, tuple[np.ndarray, str]] = {}
    agreement: dict[int, float] = {}
    if refine == "grabcut":
        rgbs = {b: (tensors[b] * 255).round().byte().permute(1, 2, 0).cpu().numpy() for b in range(len(chunk))}
        todo = [(inst.id, rgbs[b], inst.box, answers.get(inst.id, ()), p_map.numpy())
                for b, _, inst, _, _, p_map, _, _ in maps if p_map is not None]
        # Each object twice, started from the model's map and from the box (unless given), in one batch for the
        # workers.
        box_cuts = box_cuts or {}
        uncut = [(iid, rgb, box, pts) for iid, rgb, box, pts, _ in todo if iid not in box_cuts]
        jobs = [GrabCutJob.of(rgb, box, pts, prior=prior) for _, rgb, box, pts, prior in todo]
        jobs += [GrabCutJob.of(rgb, box, pts) for _, rgb, box, pts in uncut]
        masks = run_grabcut(jobs, pool)
        from_box = {**box_cuts, **{iid: m for (iid, *_), m in zip(uncut, masks[len(todo) :], strict=True)}}
        for (iid, *_), from_map in zip(todo, masks[: len(todo)], strict=True):
            refined[iid] = pick_refinement(from_map, from_box[iid])
            agreement[iid] = cut_agreement(from_map, from_box[iid])
    fitted = learnt(shape)
    if not learnt(cut_fit):
        cut_fit = None
    out: dict[int, tuple[InstanceExport, dict | None]] = {}
    for b, im, inst, win, k, p_map, weight, source in maps:
        out[inst.id] = finish_instance(inst, im, win, p_map, weight, source, answers.get(inst.id, ()), k=k,
                                       refined=refined.get(inst.id), checked=checked, cell_px=cell_px[b],
                                       cut_iou=agreement.get(inst.id), shape=(shape or {}).get(inst.id, 1.0),
                                       shape_fitted=fitted,
                                       cut_shape=None if cut_fit is None else cut_fit.get(inst.id))
    return out


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


def cut_agreement(from_map: np.ndarray, from_box: np.ndarray) -> float:
    """IoU of GrabCut's two cuts of one object (h×w bool over Ω), started from the model's map and from the box;
    0 when both are empty. Where the image's colours set the object apart, both starts end on the same segment;
    where they do not (a neighbour or the background of the object's colours), the two starts end apart, and
    whichever is exported is a guess: the score of a refined mask (module doc)."""
    union = np.logical_or(from_map, from_box).sum()
    return float(np.logical_and(from_map, from_box).sum() / union) if union else 0.0


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


def _instance_map(
    probs: Tensor, detections: dict | None, inst: Instance, classes: Mapping[int, int], win: PixelWindow,
) -> tuple[Tensor | None, float, str]:
    """The h×w probability map over Ω the mask comes from, the weight of its trust score, its source."""
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


def trust_score(p_map: Tensor, mask: np.ndarray, weight: float = 1.0) -> float:
    """``weight · max(0, 2 · mean_Ω b − 1)`` with b = p on ``mask`` and 1 − p off it, for an h×w probability
    map and the h×w bool mask exported for it (module doc), in [0, 1]."""
    if p_map.numel() == 0:
        return 0.0
    on = torch.from_numpy(np.asarray(mask, dtype=bool))
    p = p_map.float()
    belief = float(torch.where(on, p, 1.0 - p).mean())
    return min(max(weight * (2.0 * belief - 1.0), 0.0), 1.0)


def finish_instance(
    inst: Instance, image: ImageRecord, win: PixelWindow, p_map: Tensor | None, weight: float, source: str,
    answers: Sequence[Answer], k: int, refined: tuple[np.ndarray, str] | None = None, checked: bool = False,
    cell_px: float | None = None, cut_iou: float | None = None, shape: float = 1.0, shape_fitted: bool = False,
    cut_shape: float | None = None,
) -> tuple[InstanceExport, dict | None]:
    """Threshold ``p_map`` (h×w over ``win``) or take the ``refined`` mask instead (h×w bool over ``win``
    and its ``apis_refinement``, see :func:`pick_refinement`), force the answers, encode at the image's
    size. With ``checked`` (``refine="auto"``) the refined mask, the thresholded map and the ellipse are
    tried in turn, and the first that passes :func:`apis.mask_checks.check_mask` (fills the box's sides,
    agrees with the answers before forcing) is kept. Whatever the mode, a mask that would be empty is
    replaced by the ellipse inscribed in the box (``apis_refinement: "ellipse"``). ``cell_px``
    (:func:`logit_cell_px`): with ``checked``, the map is a candidate only for an object at least
    :data:`MIN_MAP_CELLS` cells across, and its sides are judged within one cell. ``cut_iou``: the IoU of the
    two GrabCut cuts behind ``refined`` (:func:`cut_agreement`); when the exported mask is one of them, it is the
    trust score (times ``weight``), else the score is the model's belief in the exported mask
    (:func:`trust_score`); either is multiplied by ``shape``, the chance the answers predict that the ellipse
    inscribed in the object's box fits it (:func:`apis.shape_prior.ellipse_fit`; module doc). With
    ``shape_fitted`` (the answers fitted that chance) an ellipse exported where the map could not judge it (the
    object narrower than :data:`MIN_MAP_CELLS` cells, or no map at all) takes ``2 · shape − 1`` in place of the
    map's belief, since the fit is then the only evidence about the mask. ``cut_shape``: for a mask GrabCut cut,
    the chance that GrabCut from the box is right in this box (:func:`apis.shape_prior.source_fit`), its factor
    instead of ``shape``. ``points_agree`` is always that of ``p_map``, the model's own.

    Returns the instance's :class:`InstanceExport` and its compressed RLE (None when ``p_map`` is None,
    i.e. missing). Raises :class:`ExportError` for an answer outside Ω (store and dataset disagree).
    """
    for x, y, _ in answers:
        if not win.contains(x, y):
            raise ExportError(
                f"annotation {inst.id} (image {inst.image_id}): answered pixel (x={x}, y={y}) lies outside its Ω "
                f"(columns {win.x0}..{win.x1 - 1}, rows {win.y0}..{win.y1 - 1}); the store's points belong to "
                "another version of this dataset: export with the train json the project was initialised from"
            )
    if p_map is None and not checked:
        exp = InstanceExport(inst.id, inst.image_id, "missing", 0.0, None, len(answers), 0, 0, k)
        return exp, None
    if p_map is None:  # the model gave nothing: a mask the box alone draws beats none
        source, weight, p_map = "no_model", 0.0, torch.zeros(win.height, win.width)
    if tuple(p_map.shape) != (win.height, win.width):
        raise ExportError(f"annotation {inst.id}: the model gave a {tuple(p_map.shape)} map for a "
                          f"{win.height}x{win.width} Ω; a prediction set must cover Ω exactly")
    thresholded = (p_map > MASK_THRESHOLD).numpy()
    # (mask, apis_refinement, the finest detail its source draws in pixels)
    candidates = [] if refined is None else [(np.asarray(refined[0], dtype=bool), refined[1], 1.0)]
    resolved = not checked or cell_px is None or min(win.width, win.height) >= MIN_MAP_CELLS * cell_px
    if resolved:
        candidates.append((thresholded, None, 1.0 if cell_px is None else cell_px))
    if checked:
        candidates.append((ellipse_mask(inst.box, win), "ellipse", 1.0))
        # The first candidate that fills its box and agrees with its answers (before they are forced), else the
        # first that fills its box, else the ellipse.
        checks = [check_mask(c[0], win, answers, c[2]) for c in candidates]
        chosen = next((c for c, k in zip(candidates, checks, strict=True) if k.ok),
                      next((c for c, k in zip(candidates, checks, strict=True) if k.passes_box), candidates[-1]))
    else:
        chosen = candidates[0]
    mask, refinement = chosen[0].astype(np.uint8), chosen[1]
    agree, forced = force_answers(thresholded.astype(np.uint8), win, answers)
    force_answers(mask, win, answers)
    if not mask.any():  # never an empty mask for a box: the ellipse inscribed in it, answers forced
        mask, refinement = ellipse_mask(inst.box, win).astype(np.uint8), "ellipse"
        force_answers(mask, win, answers)
    full = np.zeros((image.height, image.width), dtype=np.uint8)
    full[win.y0 : win.y1, win.x0 : win.x1] = mask
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
    elif refinement == "ellipse" and checked and shape_fitted and (not resolved or source == "no_model"):
        # A nucleus a few cells across is drawn by the upsampling kernel and the model's belief in its ellipse says
        # nothing (DSB 2018 at P0: 86 of 300 objects, true IoU 0.80 at belief 0.36; README, "A mask the map cannot
        # vouch for").
        score, score_from = 2.0 * shape - 1.0, "fit"
    else:
        score = trust_score(p_map, mask.astype(bool), weight)
    score = max(score, 0.0) * shape
    exp = InstanceExport(inst.id, inst.image_id, source, score,
                         agree / len(answers) if answers else None, len(answers), forced, int(full.sum()), k,
                         refinement=refinement, box_sides=sides_reached(mask.astype(bool)), shape_fit=shape,
                         score_from=score_from, fit_source=fit_source)
    return exp, encode_mask(full)


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


def force_answers(mask: np.ndarray, win: PixelWindow, answers: Sequence[Answer]) -> tuple[int, int]:
    """Set every answered pixel of ``mask`` (h×w over ``win``) to its answer, in place.

    Returns (answers the mask already agreed with, pixels changed).
    """
    agree = changed = 0
    for x, y, label in answers:
        r, c = y - win.y0, x - win.x0
        if int(mask[r, c]) == int(label):
            agree += 1
        else:
            changed += 1
            mask[r, c] = int(label)
    return agree, changed


# ------------------------------------------------------------------------------------------- the file
def _coco_with_masks(
    dataset: CocoDataset, results: Mapping[int, tuple[InstanceExport, dict | None]], prediction_set: str,
    max_step: int | None, refine: str = "none",
) -> dict:
    """The input's COCO object with each pool annotation's mask and trust fields replaced."""
    coco = dataset_to_dict(dataset)  # fresh annotation dicts; ``info`` is copied below before changing it
    for ann in coco["annotations"]:
        if ann["id"] not in results or ann.get("iscrowd"):
            continue
        exp, rle = results[ann["id"]]
        ann.pop("segmentation", None)
        if rle is not None:
            ann["segmentation"] = rle
            ann["area"] = exp.area
        ann["apis_score"] = round(exp.score, 6)
        ann["apis_points_agree"] = None if exp.points_agree is None else round(exp.points_agree, 6)
        ann["apis_source"] = exp.source
        ann["apis_refinement"] = exp.refinement
        ann["apis_forced_pixels"] = exp.forced_pixels
        ann["apis_box_sides"] = exp.box_sides
        ann["apis_shape_fit"] = round(exp.shape_fit, 6)
        ann["apis_fit_source"] = exp.fit_source
        ann["apis_review"] = None if exp.review is None else {
            "decision": exp.review.decision, "step": exp.review.step, "reviewer": exp.review.reviewer}
    info = dict(coco.get("info") or {})
    info["apis_missing"] = sorted(i for i, (e, _) in results.items() if e.missing)
    info["apis_image_root"] = str(Path(dataset.image_root).resolve())
    info["apis_export"] = {"prediction_set": prediction_set, "mask_threshold": MASK_THRESHOLD,
                           "max_step": max_step, "refine": refine}
    coco["info"] = info
    return coco


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


def review_path(out: Path) -> Path:
    """Where the review list of ``out`` goes: ``masks.json`` → ``masks.review.json``."""
    return out.with_name(f"{out.stem}.review.json")


def write_export(result: ExportResult, out: Path | str) -> list[Path]:
    """Write the COCO file to ``out`` (and the review list next to it when there is one), atomically.
    Returns the paths written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [write_coco(result.coco, out)]
    if result.review:
        write_json_atomic(result.review, review_path(out))
        written.append(review_path(out))
    return written


# ---------------------------------------------------------------------------------------- quality
def export_pseudo_masks(exported: ExportResult, dataset: CocoDataset) -> dict[int, PseudoMask]:
    """Instance id → the exported mask cut to its Ω, for every pool instance the export made a mask of
    (missing ones are left out), as training's pseudo masks (``loop.pseudo_masks: refined``)."""
    images = dataset.image_by_id()
    by_id = {a.id: a for a in dataset.instances()}
    out: dict[int, PseudoMask] = {}
    for ann in exported.coco["annotations"]:
        inst = by_id.get(ann["id"])
        if inst is None or not ann.get("segmentation") or "apis_source" not in ann:
            continue
        im = images[inst.image_id]
        win = omega(inst.box, im.width, im.height)
        full = decode_segmentation(ann["segmentation"], im.height, im.width)
        out[inst.id] = PseudoMask(win, full[win.y0 : win.y1, win.x0 : win.x1].astype(bool))
    return out


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


# -------------------------------------------------------------------------------------------- CLI
def model_for_step(project: Path, store: Store, step: int, member: int = 0) -> Path:
    """The checkpoint of M(step) (or of its ensemble member ``member``): the store's training record,
    else the default place under ``models/step{step}/``."""
    try:
        return find_model(project, store.phase, store.phase_names(), step, member)
    except ModelNotFound as e:
        raise ExportError(str(e)) from None


def load_step_model(project: Path, store: Store, step: int, prediction_set: str, ensemble_size: int,
                    device: torch.device | str) -> MaskModel:
    """M(step) for set A or S; the ensemble of its ``ensemble_size`` members for sets M and S+M."""
    from apis.models.ensemble import Ensemble
    from apis.train import load_model

    main = load_model(model_for_step(project, store, step), device)
    if not uses_ensemble(prediction_set):
        return main
    return Ensemble([main, *(load_model(model_for_step(project, store, step, j), device)
                             for j in range(1, ensemble_size))])


def export_masks_cli(
    project: Path | str, step: int, out: Path | str, review: int = 0, device: str | None = None,
    progress: Progress | None = None, refine: str | None = None, *, fmt: str = "coco", label_ext: str = "png",
    force: bool = False,
) -> ExportResult:
    """``apis export masks PROJECT --step S --out FILE.json|DIR [--format F] [--review N]``.

    Loads PROJECT/config.yaml, the train json it names (``data.train``), M(S) and the answers of steps
    ≤ S; ``refine`` (default: the config's ``loop.refine_masks``) as in :func:`export_masks`. ``out`` a
    ``.json`` file (``fmt`` ``coco`` only): writes the COCO file there and, with ``review`` > 0, the review
    list to :func:`review_path` of ``out``. ``out`` a folder: writes it in ``fmt`` (``coco``, ``label-images``,
    ``mask-folders``, ``yolo``; ``label_ext`` png or tif; ``force`` replaces an earlier export there) with
    :func:`apis.data.writers.write_masks`, the review list as ``review.json`` inside, and keeps what was written
    in :attr:`ExportResult.written`. Each exported annotation also gets ``apis_points``: its answered points.
    Raises :class:`ExportError` (or :class:`apis.data.coco.DatasetError`, :class:`apis.config.ConfigError`)
    with the fix in the message; a wrong format or folder is refused before the model runs.
    """
    from apis.config import load_config
    from apis.data.coco import load_coco
    from apis.data.writers import FORMATS, LABEL_EXTS, WriteError, WriteOptions, check_target, write_masks
    from apis.store import DB_NAME
    from apis.train import pick_device

    project, out = Path(project), Path(out)
    to_file = out.suffix.lower() == ".json"
    if fmt not in FORMATS or label_ext not in LABEL_EXTS:
        raise ExportError(f"--format {fmt} --label-ext {label_ext}: choose a format of {', '.join(FORMATS)} and a "
                          f"label extension of {', '.join(LABEL_EXTS)}")
    if to_file and fmt != "coco":
        raise ExportError(f"{out}: --format {fmt} writes a folder, not a json file. Fix: pass --out a folder, "
                          f"e.g. {out.with_suffix('')}")
    try:
        if not to_file:
            check_target(out, force)
    except WriteError as e:
        raise ExportError(str(e)) from None
    if not (project / DB_NAME).is_file():
        raise ExportError(f"{project}: not a project (no {DB_NAME}); create one with `apis init {project}`")
    cfg = load_config(project / "config.yaml")
    if not cfg.data.train:
        raise ExportError(f"{project / 'config.yaml'}: data.train is empty; name the train COCO json there")
    dataset = load_coco(Path(cfg.data.train))
    dev = pick_device(device or cfg.device)
    with Store.open(project / DB_NAME) as store:
        model = load_step_model(project, store, step, cfg.loop.prediction_set, cfg.loop.ensemble_size, dev)
        result = export_masks(model, dataset, store, dev, cfg.loop.prediction_set, review, progress,
                              max_step=step, batch_size=cfg.eval_batch_size,
                              refine=refine if refine is not None else cfg.loop.refine_masks)
    points = {e.annotation_id: e.points for e in result.instances}
    for ann in result.coco["annotations"]:
        if ann["id"] in points:
            ann["apis_points"] = points[ann["id"]]
    if to_file:
        write_export(result, out)
        return result
    extra = {"review.json": result.review} if result.review else {}
    try:
        result.written = write_masks(result.coco, dataset.image_root, out, fmt,
                                     WriteOptions(label_ext=label_ext, force=force, extra=extra))
    except WriteError as e:
        raise ExportError(str(e)) from None
    return result


def summary(result: ExportResult, out: Path | str, image_root: Path | str | None = None) -> list[str]:
    """Lines for the terminal after an export written to ``out`` (a COCO file, or a folder: then the writer's
    lines, :attr:`ExportResult.written`)."""
    out = Path(out)
    n = len(result.instances)
    sources = {s: sum(e.source == s for e in result.instances)
               for s in ("prediction_set", "detection", "no_model", "missing")}
    drawn = f", {sources['no_model']} the ellipse where the model gave nothing" if sources["no_model"] else ""
    where = "info.apis_missing" if result.written is None else "missing=yes in objects.csv"
    lines = [f"{out}: {n - sources['missing']} of {n} pool masks ({sources['detection']} from detections{drawn}), "
             f"{sources['missing']} missing ({where}); answers changed {result.forced_pixels} pixels"]
    fits = [e.shape_fit for e in result.instances if not e.missing and not e.reviewed]
    if fits and min(fits) < 1.0:
        lines.append(f"trust scores times the box-shape prior the answers fitted (apis_shape_fit "
                     f"{min(fits):.2f}-{max(fits):.2f}: how often an ellipse fits a box of that shape)")
    if result.written is not None:
        if result.review:
            lines.append(f"{out / 'review.json'}: {len(result.review)} instances to review")
        return lines + result.written.lines()
    if result.review:
        lines.append(f"{review_path(out)}: {len(result.review)} instances to review")
    root = Path(image_root or result.coco.get("info", {}).get("apis_image_root", ""))
    lines.append(f"file_name entries are relative to {root}; check with: apis data check {out} --images {root}")
    return lines


__all__ = [
    "MASK_THRESHOLD",
    "REFINEMENTS",
    "ExportError",
    "ExportResult",
    "InstanceExport",
    "MaskModel",
    "best_detection",
    "export_masks",
    "export_masks_cli",
    "finish_instance",
    "force_answers",
    "model_for_step",
    "pool_iou_for_step",
    "pool_mask_iou",
    "pool_mask_ious",
    "review_list",
    "review_path",
    "summary",
    "reviewed_instance",
    "trust_rank_correlation",
    "trust_score",
    "write_export",
]
