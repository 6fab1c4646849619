"""Masks as the product: one mask per pool instance (non-crowd annotation of the train split) from a trained
model, in one pass over the pool's images (:func:`export_masks`).

Per batch of images: the prediction sets and, for objects without one, the model's detections give each object a
map (:mod:`apis.export.candidates`); with ``refine="grabcut"`` (or ``"auto"`` where the answers trust the image's
colours, :func:`colours_trusted`) GrabCut refines it; each object's mask is then judged and its answers forced
(:mod:`apis.export.checks`) and scored (:mod:`apis.export.trust`); the COCO object is assembled by
:func:`apis.export.writers.coco_with_masks`. Nothing is written to disk here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Executor

import numpy as np
import torch

from apis.batches import ImageBatch, image_batches
from apis.data.loader import PseudoMask, category_index
from apis.data.records import CocoDataset, decode_segmentation
from apis.export.candidates import grabcut_refinements, instance_map, logit_cell_px
from apis.export.checks import finish_instance, reviewed_instance
from apis.export.results import Answer, ExportError, ExportResult, InstanceExport, MaskModel, Progress
from apis.export.trust import review_list
from apis.export.writers import coco_with_masks
from apis.geometry import PixelWindow, omega
from apis.names import PREDICTION_SETS, REFINEMENTS
from apis.selection.select import prediction_sets
from apis.shape_prior import ellipse_fit, learnt, source_fit
from apis.store import ReviewDecision, Store
from apis.yardsticks import default_workers, grabcut_pool

#: :func:`colours_trusted` judges GrabCut on at most this many answered objects (about 60 ms each).
JUDGE_OBJECTS = 300


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
    export only these pool instances (a measurement on a sample, see :func:`apis.export.quality.pool_mask_iou`);
    the others keep their input annotation and are left out of :attr:`ExportResult.instances`.
    ``refine="auto"``: GrabCut from the map where ``trust_colours`` (None: :func:`colours_trusted` on the
    answers at random points, :meth:`apis.store.Store.random_answers`; every answer of a mapping), else the
    map, each object checked (:func:`apis.export.checks.finish_instance`). ``box_cuts``: annotation id →
    GrabCut's mask from the box seeded with the same answers (h×w bool over Ω), already made elsewhere (the
    loop's yardstick); a refinement takes it instead of cutting the object again. ``cut_fit``: annotation id →
    the chance that GrabCut from the box alone is right at a random pixel of the box
    (:func:`apis.shape_prior.source_fit`), the weight of the cut's vote in the trust score (:mod:`apis.export.trust`);
    None: fitted here on GrabCut's masks of at most :data:`JUDGE_OBJECTS` answered objects, when the export cuts.
    """
    if refine not in REFINEMENTS:
        raise ExportError(f"unknown refinement {refine!r}; choose one of {', '.join(REFINEMENTS)}")
    if prediction_set not in PREDICTION_SETS:
        raise ExportError(f"unknown prediction set {prediction_set!r}; choose one of {', '.join(PREDICTION_SETS)}")
    if review < 0:
        raise ExportError(f"review must be >= 0 (instances to list), got {review}")
    answers = _answers(store, max_step)
    if reviews is None:
        reviews = {} if isinstance(store, Mapping) else store.reviews(max_step)
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
    judged = answers if isinstance(store, Mapping) else store.random_answers(max_step)
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
    coco = coco_with_masks(dataset, results, prediction_set, max_step, refine)
    if refine == "auto":
        coco["info"]["apis_export"]["colours_trusted"] = bool(trust_colours)
    exports = [results[a.id][0] for a in dataset.instances() if a.id in results]
    return ExportResult(coco, exports, review_list(exports, dataset, review))


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


def _answers(store: Store | Mapping[int, Sequence[Answer]], max_step: int | None) -> dict[int, list[Answer]]:
    # A mapping is answers given by hand; anything else is a store (apis.store.Store, or the rank-0 store every
    # rank of a torchrun run reads through: it has the same reads and is no Store).
    if not isinstance(store, Mapping):
        return {i: [(p.x, p.y, p.label) for p in ps] for i, ps in store.points(max_step=max_step).items()}
    return {int(i): [(int(x), int(y), int(label)) for x, y, label in ps] for i, ps in store.items()}


def _export_batch(
    model: MaskModel, batch: ImageBatch, classes: Mapping[int, int], answers: Mapping[int, Sequence[Answer]],
    prediction_set: str, refine: str = "none", pool: Executor | None = None, wanted: set[int] | None = None,
    checked: bool = False, box_cuts: Mapping[int, np.ndarray] | None = None, shape: Mapping[int, float] | None = None,
    cut_fit: Mapping[int, float] | None = None,
) -> dict[int, tuple[InstanceExport, dict | None]]:
    """Annotation id → (its export, its RLE or None) for every pool instance of ``batch`` (in ``wanted``,
    when given); ``box_cuts`` as in :func:`export_masks`; ``shape``: annotation id → the fitted chance that the
    ellipse in its box is right (:func:`apis.shape_prior.ellipse_fit`), ``cut_fit`` that GrabCut's cut from the box
    is (:func:`apis.shape_prior.source_fit`): the weights of their votes in the trust score (:mod:`apis.export.trust`;
    a fit that learnt nothing is no vote)."""
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
                         *instance_map(sets[b][g], detections.get(b), inst, classes, win)))
    refined: dict[int, tuple[np.ndarray, str]] = {}
    cuts: dict[int, np.ndarray] = {}
    if refine == "grabcut":
        rgbs = {b: (tensors[b] * 255).round().byte().permute(1, 2, 0).cpu().numpy() for b in range(len(chunk))}
        objects = [(inst.id, rgbs[b], inst.box, answers.get(inst.id, ()), p_map.numpy())
                   for b, _, inst, _, _, p_map, _, _ in maps if p_map is not None]
        refined, cuts = grabcut_refinements(objects, pool, box_cuts)
    if not learnt(shape):
        shape = None
    if not learnt(cut_fit):
        cut_fit = None
    out: dict[int, tuple[InstanceExport, dict | None]] = {}
    for b, im, inst, win, k, p_map, weight, source in maps:
        out[inst.id] = finish_instance(inst, im, win, p_map, weight, source, answers.get(inst.id, ()), k=k,
                                       refined=refined.get(inst.id), checked=checked, cell_px=cell_px[b],
                                       box_cut=cuts.get(inst.id), shape=None if shape is None else shape.get(inst.id),
                                       cut_fit=None if cut_fit is None else cut_fit.get(inst.id))
    return out
