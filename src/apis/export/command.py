"""``apis export masks``: a project's M(S) and answers of steps ≤ S in, the product out (:func:`export_masks_cli`),
and the lines the terminal shows after it (:func:`summary`)."""

from __future__ import annotations

from pathlib import Path

import torch

from apis.export.masks import export_masks
from apis.export.results import ExportError, ExportResult, MaskModel, Progress
from apis.export.writers import check_output, review_path, write_product
from apis.layout import ModelNotFound, find_model
from apis.names import uses_ensemble
from apis.store import Store


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
    ≤ S; ``refine`` (default: the config's ``loop.refine_masks``) as in :func:`apis.export.masks.export_masks`.
    ``out`` a ``.json`` file (``fmt`` ``coco`` only): writes the COCO file there and, with ``review`` > 0, the review
    list to :func:`apis.export.writers.review_path` of ``out``. ``out`` a folder: writes it in ``fmt`` (``coco``,
    ``label-images``, ``mask-folders``, ``yolo``; ``label_ext`` png or tif; ``force`` replaces an earlier export
    there) with :func:`apis.data.writers.write_masks`, the review list as ``review.json`` inside, and keeps what was
    written in :attr:`ExportResult.written`. Each exported annotation also gets ``apis_points``: its answered points.
    Raises :class:`ExportError` (or :class:`apis.data.coco.DatasetError`, :class:`apis.config.ConfigError`)
    with the fix in the message; a wrong format or folder is refused before the model runs.
    """
    from apis.config import load_config
    from apis.data.coco import load_coco
    from apis.store import DB_NAME
    from apis.train import pick_device

    project, out = Path(project), Path(out)
    check_output(out, fmt, label_ext, force)
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
    write_product(result, dataset.image_root, out, fmt, label_ext, force)
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
    fits = [e.shape_fit for e in result.instances if e.shape_fit is not None and not e.missing and not e.reviewed]
    if fits:
        lines.append(f"trust scores weigh the ellipse in each box by its fit on the answers (apis_shape_fit "
                     f"{min(fits):.2f}-{max(fits):.2f}: how often it is right in a box of that shape)")
    if result.written is not None:
        if result.review:
            lines.append(f"{out / 'review.json'}: {len(result.review)} instances to review")
        return lines + result.written.lines()
    if result.review:
        lines.append(f"{review_path(out)}: {len(result.review)} instances to review")
    root = Path(image_root or result.coco.get("info", {}).get("apis_image_root", ""))
    lines.append(f"file_name entries are relative to {root}; check with: apis data check {out} --images {root}")
    return lines
