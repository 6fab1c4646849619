"""The export's files: the COCO file, its review list, and the folders people read (written by
:mod:`apis.data.writers`, which owns every format; the export only chooses the masks).

The COCO file is the input json (:func:`apis.data.coco.dataset_to_dict`: same images, categories, annotation ids,
image ids, category ids and boxes, in the same order; crowd annotations untouched) with each exported pool
annotation's ``segmentation`` a compressed RLE at the image's size, ``area`` the mask's pixel count (the input's
where missing) and the ``apis_*`` fields of docs/people.md (``apis_score``, ``apis_points_agree``, ``apis_source``,
``apis_refinement``, ``apis_forced_pixels``, ``apis_box_sides``, ``apis_map_weight``, ``apis_shape_fit``,
``apis_cut_fit``, ``apis_review``; ``apis_points`` from :func:`write_product`). ``file_name`` entries stay relative
to the input's image folder (the file is a drop-in replacement for the input json), recorded in
``info.apis_image_root``; written elsewhere, check it with ``apis data check OUT --images DIR``.
``info.apis_missing`` lists the objects without a mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from apis.atomic import write_json_atomic
from apis.data.coco import dataset_to_dict, write_coco
from apis.data.records import CocoDataset
from apis.data.writers import FORMATS, LABEL_EXTS, WriteError, WriteOptions, check_target, write_masks
from apis.export.candidates import MASK_THRESHOLD
from apis.export.results import ExportError, ExportResult, InstanceExport


def coco_with_masks(
    dataset: CocoDataset, results: Mapping[int, tuple[InstanceExport, dict | None]], prediction_set: str,
    max_step: int | None, refine: str = "none",
) -> dict:
    """The input's COCO object with each pool annotation's mask and trust fields replaced (``results``: annotation
    id → its export and RLE, None when missing)."""
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
        ann["apis_map_weight"] = round(exp.map_weight, 6)
        ann["apis_shape_fit"] = None if exp.shape_fit is None else round(exp.shape_fit, 6)
        ann["apis_cut_fit"] = None if exp.cut_fit is None else round(exp.cut_fit, 6)
        ann["apis_review"] = None if exp.review is None else {
            "decision": exp.review.decision, "step": exp.review.step, "reviewer": exp.review.reviewer}
    info = dict(coco.get("info") or {})
    info["apis_missing"] = sorted(i for i, (e, _) in results.items() if e.missing)
    info["apis_image_root"] = str(Path(dataset.image_root).resolve())
    info["apis_export"] = {"prediction_set": prediction_set, "mask_threshold": MASK_THRESHOLD,
                           "max_step": max_step, "refine": refine}
    coco["info"] = info
    return coco


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


def check_output(out: Path, fmt: str, label_ext: str, force: bool) -> bool:
    """Refuse a format, label extension or target that cannot be written, before any model runs: ``out`` a
    ``.json`` file (``fmt`` ``coco`` only) or a folder :func:`apis.data.writers.check_target` accepts (``force``
    replaces an earlier export there). Returns whether ``out`` is a json file. Raises :class:`ExportError`."""
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
    return to_file


def write_product(result: ExportResult, image_root: Path | str, out: Path, fmt: str = "coco",
                  label_ext: str = "png", force: bool = False) -> None:
    """Give each exported annotation ``apis_points`` (its answered points) and write ``result``: to ``out``, a
    ``.json`` file, with :func:`write_export`; else to the folder ``out`` in ``fmt`` (images read from
    ``image_root``) with :func:`apis.data.writers.write_masks`, the review list as ``review.json`` inside, what was
    written kept in :attr:`ExportResult.written`. Raises :class:`ExportError`."""
    points = {e.annotation_id: e.points for e in result.instances}
    for ann in result.coco["annotations"]:
        if ann["id"] in points:
            ann["apis_points"] = points[ann["id"]]
    if out.suffix.lower() == ".json":
        write_export(result, out)
        return
    extra = {"review.json": result.review} if result.review else {}
    try:
        result.written = write_masks(result.coco, image_root, out, fmt,
                                     WriteOptions(label_ext=label_ext, force=force, extra=extra))
    except WriteError as e:
        raise ExportError(str(e)) from None
