"""``apis points``, ``apis export`` and ``apis queue``: answers, masks and review decisions in and out of a project
as files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from apis.cli.common import console, fail, progress_bars

points_app = typer.Typer(no_args_is_help=True, help="Move point answers in and out of a project (PointSup json).")
export_app = typer.Typer(no_args_is_help=True, help="Export the product: one mask per pool instance.")
queue_app = typer.Typer(no_args_is_help=True, help="Questions for people: export open ones, import answers (CSV/JSON).")


@points_app.command("export")
def points_export(project: Path = typer.Argument(...), out: Path = typer.Argument(..., help="json to write"),
                  step: int | None = typer.Option(None, help="only answers up to this step")) -> None:
    """Write the train json with each annotation's point_coords/point_labels (detectron2 PointSup format)."""
    from apis.config import load_config
    from apis.store import Store

    cfg = load_config(project / "config.yaml")
    with Store.open(project / "apis.sqlite") as store:
        n = store.export_coco(Path(cfg.data.train), out, max_step=step)
    console.print(f"{out}: {n} points written")


@points_app.command("import")
def points_import(project: Path = typer.Argument(...), path: Path = typer.Argument(..., help="PointSup json"),
                  step: int = typer.Option(..., help="step to record the answers under")) -> None:
    """Add answers from a PointSup-format json; refuses the whole file on any bad answer."""
    from apis.store import Store, StoreError

    with Store.open(project / "apis.sqlite") as store:
        try:
            n = store.import_coco(path, step)
        except StoreError as e:
            fail(str(e))
    console.print(f"{n} answers imported at step {step}")


@export_app.command("masks")
def export_masks_cmd(project: Path = typer.Argument(..., help="project folder"),
                     step: int = typer.Option(..., help="use M(step) and the answers of steps <= step"),
                     out: Path = typer.Option(..., help="COCO json file to write, or a folder (new, empty, or an "
                                                        "earlier export with --force) for --format"),
                     fmt: str = typer.Option("coco", "--format", help="coco (a .json OUT: that file; a folder: "
                                             "annotations.json + images/), label-images (labels/STEM.png, one "
                                             "integer per object), mask-folders (STEM/masks/STEM_K.png, one 0/255 "
                                             "PNG per object) or yolo (YOLO-seg polygons + data.yaml); every folder "
                                             "gets objects.csv, one row per pool object"),
                     label_ext: str = typer.Option("png", help="label-images: png or tif"),
                     force: bool = typer.Option(False, "--force", help="replace the earlier export in OUT (a folder "
                                                "without objects.csv is never replaced)"),
                     review: int = typer.Option(0, help="list the N least trustworthy instances in OUT.review.json "
                                                "(a folder: OUT/review.json)"),
                     device: str | None = typer.Option(None, help="default: the project config's"),
                     refine: str | None = typer.Option(
                         None, help="auto (GrabCut where the answers trust the colours, every mask checked), none or "
                                    "grabcut (refine each mask with the image's colours); "
                                    "default: the project config's loop.refine_masks")) -> None:
    """Write a mask per pool instance from M(step), answered points forced: the train json, or a folder of label
    images, mask folders, YOLO-seg labels or COCO with its images (--format)."""
    from apis.config import ConfigError
    from apis.data.coco import DatasetError
    from apis.export import ExportError, export_masks_cli, summary
    from apis.store import StoreError

    try:
        with progress_bars() as update:
            result = export_masks_cli(project, step, out, review, device,
                                      progress=lambda d, t: update("export masks", d, t), refine=refine,
                                      fmt=fmt, label_ext=label_ext, force=force)
    except (ExportError, DatasetError, ConfigError, StoreError) as e:
        fail(str(e))
    for line in summary(result, out):
        console.print(escape(line))



@queue_app.command("export")
def queue_export(project: Path = typer.Argument(..., help="project folder"),
                 out: Path = typer.Argument(..., help=".csv or .json to write"),
                 step: int | None = typer.Option(None, help="only this step's questions"),
                 review_step: int | None = typer.Option(
                     None, "--review-step", help="write M(S)'s masks that wait for a review decision instead, from "
                                                 "PROJECT/exports/stepS.json (exported first when missing)")) -> None:
    """Write the open questions (query_id, instance_id, image_id, file_name, x, y, answer) to fill in; with
    --review-step S, the masks of step S to accept or reject (least trusted first)."""
    from apis.config import ConfigError
    from apis.data.coco import DatasetError
    from apis.export import ExportError
    from apis.serve.exchange import ExchangeError, export_open, export_reviews
    from apis.serve.project import Project, ProjectError
    from apis.serve.review import ReviewError, ReviewSet, ensure_export, refresh_command
    from apis.store import Store, StoreError

    if review_step is not None and (review_step < 0 or step is not None):
        fail("--review-step S names the step whose masks to review (S ≥ 0); leave --step out with it")
    try:
        proj = Project.load(project)
        if review_step is None:
            with Store.open(proj.db) as store:
                n = export_open(store, proj, out, step)
        else:
            with progress_bars() as update:
                path = ensure_export(proj.root, review_step, lambda d, t: update("export masks", d, t),
                                     echo=lambda s: console.print(s, markup=False))
            with Store.open(proj.db) as store:
                review = ReviewSet.load(path, review_step, {i.id: i for i in store.instances()},
                                        refresh=refresh_command(proj.root, review_step))
                n = export_reviews(store, review, out)
    except (ProjectError, ExchangeError, ReviewError, ExportError, DatasetError, ConfigError, StoreError) as e:
        fail(str(e))
    if review_step is None:
        console.print(f"{out}: {n} open questions; fill in answer with yes, no or skip, then `apis queue import`")
    else:
        console.print(f"{out}: {n} masks of step {review_step} to review; fill in decision with accept, reject or "
                      "skip, then `apis queue import`", markup=False)


@queue_app.command("import")
def queue_import(project: Path = typer.Argument(..., help="project folder"),
                 path: Path = typer.Argument(..., help="exported .csv or .json with answers (or decisions) filled in"),
                 annotator: str = typer.Option("import", help="name stored as who answered (or reviewed)")) -> None:
    """Store the answers (or review decisions) of a filled-in export; any bad row refuses the whole file."""
    from apis.serve.exchange import ExchangeError, ImportSummary, import_file
    from apis.serve.project import Project, ProjectError
    from apis.store import Store, StoreError

    try:
        proj = Project.load(project)
        with Store.open(proj.db) as store:
            s = import_file(store, path, annotator)
    except (ProjectError, ExchangeError, StoreError) as e:
        fail(str(e))
    if isinstance(s, ImportSummary):
        console.print(f"{path}: {s.answered} answered, {s.skipped} skipped ({s.replaced} replaced by a next-best "
                      f"pixel), {s.unchanged} already stored, {s.left_open} left open")
    else:
        console.print(f"{path}: {s.accepted} accepted, {s.rejected} rejected, {s.skipped} skipped, {s.unchanged} "
                      f"already stored, {s.left_open} left for later")
