"""apis: active pointly-supervised instance segmentation (Tang et al., ECCV 2022).

Boxes plus a few yes/no point answers per object train an instance-segmentation model; apis chooses
which point to ask about next.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
data_app = typer.Typer(no_args_is_help=True, help="Dataset tools: check a COCO file, import mask folders or "
                       "label images, build the synthetic set.")
points_app = typer.Typer(no_args_is_help=True, help="Move point answers in and out of a project (PointSup json).")
app.add_typer(data_app, name="data")
export_app = typer.Typer(no_args_is_help=True, help="Export the product: one mask per pool instance.")
app.add_typer(points_app, name="points")
app.add_typer(export_app, name="export")
# Logs and CI are not terminals; give tables room there instead of rich's default 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)


@contextmanager
def progress_bars():
    """A rich progress display; yields ``update(label, done, total)``."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True) as bars:
        tasks: dict[str, int] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bars.add_task(label, total=total)
            bars.update(tasks[label], completed=done, total=total)
            if done >= total:
                bars.remove_task(tasks.pop(label))

        yield update


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can cause (a bad file, config, path or weights): each ends the command with its
    own message, never a traceback (see :func:`main`)."""
    from apis.config import ConfigError
    from apis.data.coco import DatasetError
    from apis.data.images import ImageReadError
    from apis.data.importers import ImportRefused
    from apis.export import ExportError
    from apis.models.backbone import WeightsError
    from apis.oracle import OracleError
    from apis.pseudo_boxes import PseudoBoxError
    from apis.report.runs import ReportError
    from apis.store import StoreError

    return (ConfigError, DatasetError, ImageReadError, ImportRefused, ExportError, WeightsError, OracleError,
            PseudoBoxError, ReportError, StoreError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError)


def main(argv: list[str] | None = None) -> None:
    """The ``apis`` command. An error a user can cause prints one line and exits with code 2; ``--debug``
    (anywhere on the line) or ``APIS_DEBUG=1`` shows the traceback instead."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("APIS_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="apis")
    except SystemExit:
        # Every command ends so (click's exit): matching it against user_errors() would import each module's
        # error class, torch included (a 1 GB peak after `apis data import` had used 300 MB).
        raise
    except user_errors() as e:
        if debug:
            raise
        console.print("[red]error:[/red]", escape(str(e)))
        console.print("(run again with --debug for the traceback)", style="dim")
        sys.exit(2)


def fail(message: str) -> None:
    # The message holds user data ("bbox must be [x, y, w, h]"): printed as text, never as rich markup.
    console.print("[red]error:[/red]", escape(message))
    raise typer.Exit(2)


@app.callback()
def _one_process_unless_run_or_train(ctx: typer.Context) -> None:
    # torchrun starts the same command in every process: only run and train know how to share the work.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and ctx.invoked_subcommand not in ("run", "train"):
        fail(f"`apis {ctx.invoked_subcommand}` runs in one process; only `apis run` and `apis train` run under "
             "torchrun (see README, Multiple GPUs); start it without torchrun")


def _join_ranks(cfg) -> bool:
    """Under torchrun, join the other processes (apis.distributed) and keep only rank 0's output; False
    when this is the only process."""
    from apis import distributed

    try:
        ddp = distributed.setup(cfg.device)
    except ValueError as e:
        fail(str(e))
    console.quiet = ddp and not distributed.is_main()
    return ddp


# -------------------------------------------------------------------------------------------- data
@data_app.command("check")
def data_check(path: Path = typer.Argument(..., help="COCO instances json"),
               images: Path | None = typer.Option(None, help="image folder (default: next to the json)")) -> None:
    """Validate a COCO file and its images; print a summary or every problem found."""
    from apis.data.coco import DatasetError, format_summary, load_coco, summarize

    try:
        ds = load_coco(path, images)
    except DatasetError as e:
        fail(str(e))
    for table in format_summary(summarize(ds)):
        console.print(table)


@data_app.command("import")
def data_import(src: Path = typer.Argument(..., help="the dataset's folder"),
                out: Path = typer.Argument(..., help="output folder, new or empty, outside SRC (train/, val/, "
                                           "apis.yaml)"),
                layout: str | None = typer.Option(None, help="the format: mask-folders, coco, labelme, voc-seg, "
                                                  "cellpose, yolo-seg, yolo-det, label-images, side-by-side (default: "
                                                  "the first that claims SRC; an unknown name lists them)"),
                images: Path | None = typer.Option(None, help="label-images: the image folder (default: found in SRC)"),
                labels: Path | None = typer.Option(None, help="label-images: the label folder (default: found in SRC)"),
                label_name: str | None = typer.Option(
                    None, help="label file's stem from the image's, e.g. '{stem}_mask' or 'man_seg{digits}' "
                    "(default: the template that pairs the most files)"),
                image_pattern: str | None = typer.Option(
                    None, help="images and labels side by side in SRC: the images' glob, one * for the shared stem, "
                    "e.g. '*_img.png' (with --label-pattern; default: told apart by their suffix where unambiguous)"),
                label_pattern: str | None = typer.Option(None, help="the labels' glob beside --image-pattern, e.g. "
                                                         "'*_mask.png'"),
                category: str | None = typer.Option(None, help="the one category's name (default: object)"),
                categories: Path | None = typer.Option(
                    None, help="YAML mapping globs over mask/label paths (relative to SRC) to category names; with "
                    "--class-from-value, class ids to names. A glob that matches no file is refused"),
                ignore_values: str | None = typer.Option(
                    None, help="void label values, neither object nor background: comma list of integers or #RRGGBB "
                    "colours, or none (default: 255 in 8-bit and palette labels, #e0e0c0 and #ffffff in colour "
                    "labels, none in 16-bit)"),
                class_from_value: bool | None = typer.Option(
                    None, "--class-from-value/--no-class-from-value",
                    help="label values are class × 1000 + k (Cityscapes instanceIds): the category from value "
                    "// 1000; values under 1000 are crowd regions (iscrowd 1) of classes with objects, left out "
                    "(stuff) for classes without. Unsaid, 16-bit labels that look like such ids are refused; "
                    "--no-class-from-value reads every value as an object"),
                mask_threshold: int = typer.Option(
                    128, help="a binary mask's object: grey value at or above this (8-bit scale; ×257 for 16-bit "
                    "masks; a 0/1 mask: 1)"),
                exif: str = typer.Option("auto", help="masks of an image with an EXIF orientation were drawn on its "
                                         "stored pixels (stored) or on it as shown (shown); auto: told by their size, "
                                         "refused where both sizes are equal"),
                val_fraction: float = typer.Option(0.2, help="share of images in val/ (0: train/ only)"),
                seed: int = typer.Option(0, help="seed of the split and of --max-images' sample"),
                max_images: int | None = typer.Option(None, help="import a seeded sample of this many images"),
                max_pixels: int = typer.Option(2**27, help="largest image (width × height) read; raise it for "
                                               "genuine huge images"),
                on_error: str = typer.Option("refuse", help="refuse: write nothing if any problem; skip: leave every "
                                             "image with a problem out whole and list it")) -> None:
    """Turn a folder of images and instance masks into validated COCO files with RLE masks and tight boxes:
    every mask pixel is what the source means, or the import writes nothing and names the file and the fix."""
    from apis.data.importers import import_dataset

    with progress_bars() as update:
        result = import_dataset(src, out, layout, images_dir=images, labels_dir=labels, label_name=label_name,
                                image_pattern=image_pattern, label_pattern=label_pattern, category=category,
                                categories_file=categories, ignore_values=ignore_values,
                                class_from_value=class_from_value, mask_threshold=mask_threshold, exif=exif,
                                val_fraction=val_fraction, seed=seed, max_images=max_images, max_pixels=max_pixels,
                                on_error=on_error, progress=lambda d, t: update("images", d, t))
    for problem in result.skipped:
        console.print("[yellow]skipped:[/yellow]", escape(problem))
    for path in result.left_out:
        console.print("[yellow]left out whole:[/yellow]", escape(path))
    console.print(f"format: {result.layout}")
    for note in result.notes:
        console.print(escape(note))
    for split, path in result.paths.items():
        console.print(f"{split}: {path} ({result.images[split]} images, {result.instances[split]} instances)")
    console.print(f"categories: {', '.join(result.categories)}")
    if result.sizes is not None:
        for line in result.sizes.lines():
            console.print(escape(line))
    console.print(f"run config: {result.config}  (apis compare runs/NAME --config {result.config})")


@data_app.command("synthetic")
def data_synthetic(out: Path = typer.Argument(..., help="output folder (train/ and val/ are written)"),
                   seed: int = typer.Option(0, help="random seed: same seed, same files"),
                   size: int = typer.Option(160, help="image side in pixels"),
                   train_images: int = typer.Option(240), val_images: int = typer.Option(120),
                   mask_format: str = typer.Option("rle", help="rle or polygon")) -> None:
    """Write the built-in synthetic COCO dataset (deterministic per seed)."""
    from apis.data.synthetic import SyntheticConfig, generate

    cfg = SyntheticConfig(seed=seed, image_size=size, train_images=train_images, val_images=val_images,
                          mask_format=mask_format)
    with progress_bars() as update:
        paths = generate(out, cfg, progress=lambda d, t: update("images", d, t))
    for split, p in paths.items():
        console.print(f"{split}: {p}")


@data_app.command("pseudo-boxes")
def data_pseudo_boxes(detector: Path = typer.Option(..., help="trained model (model_final.pt of apis train)"),
                      images: Path = typer.Option(..., help="COCO json of the pool's images (GT masks: simulation)"),
                      out: Path = typer.Option(..., help="COCO json to write: the box-free pool (data.train)"),
                      score: float = typer.Option(0.3, help="keep detections scoring at least this"),
                      iou: float = typer.Option(0.5, help="box IoU a pseudo box needs to match a GT instance"),
                      device: str = typer.Option("auto"), batch_size: int = typer.Option(8)) -> None:
    """Box-free APIS: the pool's boxes from a detector. With GT masks in IMAGES each pseudo box is matched
    to a GT instance by IoU and answered from its mask; false positives are dropped, misses counted."""
    from apis.data.coco import DatasetError, load_coco
    from apis.pseudo_boxes import PseudoBoxError, pseudo_box_dataset, write_pseudo_boxes
    from apis.train import load_model, pick_device

    try:
        ds = load_coco(images)
        dev = pick_device(device)
        model = load_model(detector, dev)
        with progress_bars() as update:
            r = pseudo_box_dataset(model, ds, dev, score, iou, batch_size, detector=str(detector),
                                   progress=lambda d, t: update("detect", d, t))
    except (DatasetError, PseudoBoxError, FileNotFoundError) as e:
        fail(str(e))
    write_pseudo_boxes(r, out)
    if not r.simulated:
        console.print(f"{out}: {r.pool_size} pseudo boxes (score >= {score:g}) from {len(ds.images)} images; "
                      "no GT masks in the input, so nothing was matched: people answer the points (--people)")
        return
    t = Table(title=f"Pseudo boxes (score >= {score:g}) matched to GT instances at IoU >= {iou:g}")
    for col in ("category", "GT", "matched", "recall", "missed", "wrong category", "detections", "false positives"):
        t.add_column(col, justify="left" if col == "category" else "right")
    for c in r.per_category.values():
        t.add_row(c.name, str(c.gt), str(c.matched), f"{c.matched / c.gt:.1%}" if c.gt else "-", str(c.missed),
                  str(c.wrong_category), str(c.detections), str(c.false_positives))
    t.add_row("all", str(r.gt_instances), str(r.matched), f"{r.recall:.1%}" if r.recall is not None else "-",
              str(r.missed), str(r.wrong_category), str(r.detections), str(r.false_positives), style="bold")
    console.print(t)
    console.print(f"{out}: pool of {r.pool_size} matched pseudo boxes; {r.false_positives} false positives dropped; "
                  f"{r.missed} GT instances missed (ids in info.apis_missed_gt_ids)")


# ---------------------------------------------------------------------------------------- projects
def _datasets(cfg, root: Path):
    """:func:`apis.splits.run_splits` with a progress bar; a bad config or file ends the command."""
    from apis.config import ConfigError
    from apis.data.coco import DatasetError
    from apis.splits import run_splits

    try:
        with progress_bars() as update:
            return run_splits(cfg, root, progress=lambda a, b: update("synthetic data", a, b))
    except (ConfigError, DatasetError) as e:
        fail(str(e))


def _config(config: Path | None, preset: str | None, steps: int | None = None, strategies: str | None = None,
            seeds: str | None = None):
    from apis.config import ConfigError, load_config

    overrides: dict = {}
    if preset:
        overrides["preset"] = preset
    loop: dict = {}
    if steps is not None:
        loop["steps"] = steps
    if strategies:
        loop["strategies"] = [s.strip() for s in strategies.split(",") if s.strip()]
    if seeds:
        loop["seeds"] = [int(s) for s in seeds.split(",")]
    if loop:
        overrides["loop"] = loop
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        fail(str(e))


@app.command()
def init(project: Path = typer.Argument(..., help="project folder (created)"),
         config: Path | None = typer.Option(None, help="YAML run config"),
         preset: str | None = typer.Option(None, help="tiny or coco"),
         seed: int = typer.Option(0, help="seed of P0"),
         people: bool = typer.Option(False, help="people answer P0 (apis serve) instead of the json's GT masks"),
         images: Path | None = typer.Option(None, help="start from this folder of images alone (png, jpg, tif, "
                                            "bmp): people draw the boxes on the box page of `apis serve`"),
         categories: str | None = typer.Option(None, help="with --images: the boxes' categories, comma-separated "
                                               "(default: object)"),
         ) -> None:
    """Create a project: store the pool's instances and answer P0 (one random point per instance).

    With --people, P0's questions are posted for people and the command exits with code 3. With --images, the
    project starts from images alone: people draw the boxes first (`apis serve PROJECT`), then P0 is posted."""
    from apis.config import dump_config
    from apis.loop import ActiveRun, WaitingForPeople, mask_oracle
    from apis.store import Store

    cfg = _config(config, preset)
    if images is not None or categories is not None:
        _init_from_images(project, images, categories, cfg, seed)
        return
    project.mkdir(parents=True, exist_ok=True)
    cfg, train_set, val_set = _datasets(cfg, project)
    dump_config(cfg, project / "config.yaml")
    oracle, gt = (None, None) if people else mask_oracle(train_set)
    run = ActiveRun(project, cfg, train_set, val_set, "random", seed, oracle, gt, report=console.print, people=people)
    with Store.open(project / "apis.sqlite") as store:
        try:
            run.initial_points(store)
        except WaitingForPeople as e:
            console.print(escape(str(e)), style="yellow")
            raise typer.Exit(3) from None
    _print_budget(project, cfg)


def _init_from_images(project: Path, images: Path | None, categories: str | None, cfg, seed: int) -> None:
    """`apis init PROJECT --images DIR`: the project of a folder of images (apis.serve.box_project.create)."""
    from apis.data.folder import FolderRefused
    from apis.serve.box_project import BoxProjectError, create, parse_categories

    if images is None:
        fail("--categories names the categories of the boxes people draw; give --images DIR with it")
    try:
        with progress_bars() as update:
            made = create(project, images, parse_categories(categories), cfg, seed,
                          progress=lambda d, t: update("images", d, t))
    except (FolderRefused, BoxProjectError) as e:
        fail(str(e))
    converted = f" ({made.converted} stored as PNG: a browser would not show them as the loader reads them)"
    console.print(f"{project}: {made.images} images copied to {made.train_json.parent / 'images'}"
                  + (converted if made.converted else ""), markup=False)
    console.print(f"train json: {made.train_json} (no boxes yet); categories: {', '.join(made.categories)}",
                  markup=False)
    console.print(f"next: `apis serve {project}` prints each annotator's login link; people draw the boxes there. "
                  f"When the last image is done the boxes become the pool and P0's point questions are posted "
                  f"(or `apis boxes finish {project} --only-done`); then `apis run {project} --people`.", markup=False)


def _print_budget(project: Path, cfg) -> None:
    from apis.cost import budget, drawn_boxes
    from apis.store import Store

    with Store.open(project / "apis.sqlite") as store:
        n_inst = len(store.instances("train"))
        b = budget(store, cfg.cost, split="train")
        steps = store.steps()
        drawn = drawn_boxes(store) if store.box_project() is not None else None  # None: the json gave the boxes
    t = Table(title=f"project {project}")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("instances in the pool", str(n_inst))
    if drawn is not None:
        t.add_row("boxes drawn by people", str(drawn))
    t.add_row("point answers", str(b.points))
    t.add_row("points per instance", f"{b.points / max(1, n_inst):.2f}")
    t.add_row("steps answered", ", ".join(map(str, steps)) or "-")
    t.add_row("masks bought", str(b.masks))
    t.add_row("review decisions", str(b.reviews))
    seconds = (b.points * cfg.cost.point_s + b.masks * cfg.cost.mask_s + b.reviews * cfg.cost.review_seconds
               + (drawn or 0) * cfg.cost.box_s)
    t.add_row(f"annotation time (points at {cfg.cost.point_s} s, masks at {cfg.cost.mask_s} s, reviews at "
              f"{cfg.cost.review_seconds} s" + (f", boxes at {cfg.cost.box_s} s" if drawn is not None else "") + ")",
              f"{seconds:.0f} s")
    t.add_row("for comparison: polygon masks for every instance", f"{n_inst * cfg.cost.mask_s / 3600:.2f} h")
    console.print(t)


@app.command("budget")
def budget_cmd(project: Path = typer.Argument(..., help="project folder")) -> None:
    """Points, masks, review decisions and the boxes people drew so far, in counts and in hours."""
    from apis.config import load_config

    if not (project / "apis.sqlite").exists():
        fail(f"{project}: no apis.sqlite here; create the project with `apis init {project}`")
    _print_budget(project, load_config(project / "config.yaml") if (project / "config.yaml").exists()
                  else load_config())


@app.command()
def run(project: Path = typer.Argument(..., help="run folder (created or resumed)"),
        config: Path | None = typer.Option(None, help="YAML run config"),
        preset: str | None = typer.Option(None, help="tiny or coco"),
        strategy: str = typer.Option("entropy", help="random, entropy, variance, lowest_entropy, max_error_gt, "
                                                     "least_error_gt"),
        seed: int = typer.Option(0), steps: int | None = typer.Option(None, help="number of active steps"),
        people: bool = typer.Option(False, help="people answer (apis serve) instead of the json's GT masks"),
        ) -> None:
    """Run the active loop P0 → M0 → (select → answer → fine-tune → evaluate)*; resumes where it stopped.

    With --people the run stops (exit code 3) whenever questions wait for people; run it again after
    they are answered and it continues from there."""
    from apis import distributed
    from apis.loop import ActiveRun, WaitingForPeople, mask_oracle

    if config is None and (project / "config.yaml").exists():
        config = project / "config.yaml"
    cfg = _config(config, preset, steps)
    ddp = _join_ranks(cfg)
    cfg = distributed.broadcast(cfg)  # every rank runs rank 0's config
    with distributed.main_first():  # rank 0 builds the synthetic set; the others read it
        cfg, train_set, val_set = _datasets(cfg, project)
    oracle, gt = (None, None) if people else mask_oracle(train_set)
    try:
        with progress_bars() as update:
            r = (distributed.DistributedRun if ddp else ActiveRun)(
                project, cfg, train_set, val_set, strategy, seed, oracle, gt, console.print, update, people=people)
            results = r.run()
    except distributed.Stopped as e:  # rank 0 stopped the run and says why
        raise typer.Exit(e.code) from None
    except WaitingForPeople as e:
        console.print(escape(str(e)), style="yellow")
        raise typer.Exit(3) from None
    except ValueError as e:  # RunMismatch, an unknown strategy: the message says what to do
        fail(str(e))
    t = Table(title=f"{strategy}, seed {seed}")
    reviewed = any(x.reviews for x in results)  # hours then include cost.review_seconds per decision
    for col in ("step", "points/instance", *(("reviews", "accepted") if reviewed else ()), "hours", "mask AP",
                "AP50", "AP75", "box AP"):
        t.add_column(col, justify="right")
    for x in results:
        t.add_row(str(x.step), f"{x.points_per_instance:.2f}", *((str(x.reviews), str(x.accepted)) if reviewed else ()),
                  f"{x.annotation_hours:.3f}", f"{x.segm['AP']:.2f}", f"{x.segm['AP50']:.2f}", f"{x.segm['AP75']:.2f}",
                  f"{x.bbox['AP']:.2f}")
    console.print(t)
    if ddp:
        distributed.shutdown()


@app.command("compare")
def compare_cmd(out: Path = typer.Argument(..., help="comparison folder (created or resumed)"),
                config: Path | None = typer.Option(None, help="YAML run config"),
                preset: str | None = typer.Option(None, help="tiny or coco"),
                strategies: str | None = typer.Option(None, help="comma-separated, e.g. random,entropy"),
                seeds: str | None = typer.Option(None, help="comma-separated, e.g. 0,1,2"),
                steps: int | None = typer.Option(None)) -> None:
    """Compare strategies from a shared P0 and M0 per seed; writes results.csv and plots, prints the table."""
    cfg = _config(config, preset, steps, strategies, seeds)
    _compare(out, cfg)


def _compare(out: Path, cfg) -> None:
    from apis.experiment import compare, read_results
    from apis.report.plots import plot_comparison, plot_pool_iou

    t0 = time.time()
    cfg, train_set, val_set = _datasets(cfg, out)
    try:
        with progress_bars() as update:
            compare(out, cfg, train_set, val_set, report=console.print, progress=update)
    except ValueError as e:  # RunMismatch: the folder holds a comparison made with other settings
        fail(str(e))
    rows = read_results(out / "results.csv")
    print_table(rows)
    paths = plot_comparison(rows, out, point_s=cfg.cost.point_s)
    paths.append(plot_pool_iou(rows, out, len(train_set.instances()), cfg.cost.mask_s))
    for p in filter(None, paths):
        console.print(f"plot: {p}")
    console.print(f"results: {out / 'results.csv'}  ({time.time() - t0:.0f} s)")


def print_table(rows: list[dict]) -> None:
    _metric_table(rows, "AP", "mask AP on val")
    if any(r.get("pool_iou", "") != "" for r in rows):
        _metric_table(rows, "pool_iou", "pool mask IoU of the exported masks (train)")
    if any(r.get("reviews", "") not in ("", "0", 0) for r in rows):
        # Arms with review spend more hours a step than those without: compare them at equal hours.
        _metric_table(rows, "annotation_hours", "annotation hours (answers + review decisions)")
    if any(r.get("trust_spearman", "") not in ("", None) for r in rows):
        _metric_table(rows, "trust_spearman", "Spearman(apis_score, true IoU) of the exported pool masks")
    if any(r.get("trust_worst_tenth", "") not in ("", None) for r in rows):
        _metric_table(rows, "trust_worst_tenth", "share of the worst tenth of the pool masks (true IoU) among the "
                      "least trusted tenth (apis_score)")
    if any(r.get("pool_iou_box", "") not in ("", None) for r in rows):
        print_yardsticks(rows)
    _diagnostics_table(rows)


def print_yardsticks(rows: list[dict]) -> None:
    """The no-model yardsticks beside the model's pool IoU: what the boxes (and the same answered points)
    give without any model. Mean over seeds; ± the standard error over objects when a sample was used."""
    from apis.experiment import summary_table
    from apis.names import display_name
    from apis.yardsticks import COLUMNS

    names = {"box": "box filled", "ellipse": "ellipse in the box", "grabcut": "GrabCut from the box"}
    steps = sorted({int(r["step"]) for r in rows})
    sampled = {r.get("yardstick_objects", "") for r in rows} - {""}
    t = Table(title="no-model yardsticks: pool mask IoU (train)"
              + (f", {'/'.join(sorted(sampled))} objects" if sampled else ""))
    t.add_column("yardstick")
    for s in steps:
        t.add_column(f"P{s}", justify="right")

    def cells(column: str, strategy: str | None) -> list[str]:
        table = summary_table(rows, column)
        se = summary_table(rows, f"{column}_se")
        strategy = strategy if strategy is not None else next(iter(table), None)
        out = []
        for s in steps:
            c = table.get(strategy, {}).get(s)
            e = se.get(strategy, {}).get(s)
            out.append("" if c is None else f"{c.mean:.3f}" + (f" ± {e.mean:.3f}" if e is not None else ""))
        return out

    for m, label in names.items():
        t.add_row(label, *cells(COLUMNS[m], None))
    for strategy in summary_table(rows, COLUMNS["grabcut_points"]):
        t.add_row(f"GrabCut + {display_name(strategy)}'s points", *cells(COLUMNS["grabcut_points"], strategy))
    console.print(t)


def _metric_table(rows: list[dict], metric: str, title: str) -> None:
    from apis.experiment import summary_table
    from apis.names import display_name

    table = summary_table(rows, metric)
    steps = sorted({s for cells in table.values() for s in cells})
    seeds = len({r["seed"] for r in rows})
    t = Table(title=f"{title} (mean ± sd over {seeds} seed{'s' * (seeds > 1)}; Δ = paired difference to Random)")
    t.add_column("strategy")
    for s in steps:
        t.add_column(f"P{s}", justify="right")
    for strategy, cells in table.items():
        row = [display_name(strategy)]
        for s in steps:
            c = cells.get(s)
            if c is None:
                row.append("")
                continue
            digits = 3 if metric in ("pool_iou", "annotation_hours", "trust_spearman", "trust_worst_tenth") else 2
            text = f"{c.mean:.{digits}f}" + (f" ± {c.spread:.{digits}f}" if seeds > 1 else "")
            if c.delta is not None and s > 0:
                se = f" ± {c.delta_se:.{digits}f}" if c.delta_se is not None else ""
                text += f" (Δ {c.delta:+.{digits}f}{se})"
            row.append(text)
        t.add_row(*row)
    console.print(t)


def _diagnostics_table(rows: list[dict]) -> None:
    from apis.names import display_name

    steps = sorted({int(r["step"]) for r in rows})
    diag = Table(title="chosen points: share misclassified by M(s−1) / mean distance to GT boundary (px)")
    diag.add_column("strategy")
    for s in steps[1:]:
        diag.add_column(f"P{s}", justify="right")
    by = {}
    for r in rows:
        if int(r["step"]) > 0:
            by.setdefault(r["strategy"], {}).setdefault(int(r["step"]), []).append(r)
    for strategy, per_step in by.items():
        cells = []
        for s in steps[1:]:
            rs = per_step.get(s, [])
            mis = [float(r["misclassified"]) for r in rs if r["misclassified"] != ""]
            dist = [float(r["boundary_distance"]) for r in rs if r["boundary_distance"] != ""]
            cells.append(f"{sum(mis) / len(mis):.0%} / {sum(dist) / len(dist):.1f}" if mis and dist else "")
        diag.add_row(display_name(strategy), *cells)
    console.print(diag)


@app.command()
def demo(out: Path = typer.Option(Path("demo"), help="output folder (resumed if it exists)")) -> None:
    """The main job: Random vs Entropy, P0..P3, on the built-in dataset, on the CPU (configs/demo.yaml: the tiny
    preset shortened to end within 15 minutes on 2 cores: M0 400 iterations, 60 a step, yardsticks on 200 objects)."""
    from apis.config import DEMO_OVERRIDES, load_config

    cfg = load_config(None, DEMO_OVERRIDES)
    console.print("[bold]apis demo[/bold]: Random vs Entropy for P0..P3 on the built-in synthetic dataset "
                  "(tiny preset, EfficientNet-Lite0 ImageNet backbone). Resumes if interrupted.")
    _compare(out, cfg)


@app.command("report")
def report_cmd(source: Path = typer.Argument(..., help="comparison folder (apis compare) or run folder (apis run)"),
               out: Path | None = typer.Option(None, help="report folder (default: SOURCE/report)"),
               step: int = typer.Option(1, help="step shown in the gallery (the last finished one if later)"),
               instances: int = typer.Option(6, help="objects in the gallery")) -> None:
    """Write a self-contained HTML report with PNG plots: AP curves, Table S1 (Δ to Random by object size),
    diagnostics of the chosen points, accuracy on random vs acquired points, a gallery. Reads SOURCE only."""
    from apis.report.html import write_report
    from apis.report.runs import ReportError

    if step < 1 or instances < 1:
        fail("--step and --instances must be at least 1")
    try:
        write_report(source, out, step, instances, log=console.print)
    except ReportError as e:
        fail(str(e))


# ------------------------------------------------------------------------------------ train / eval
@app.command("train")
def train_cmd(out: Path = typer.Argument(..., help="output folder (resumed if it holds a checkpoint)"),
              config: Path | None = typer.Option(None, help="YAML run config"),
              preset: str | None = typer.Option(None, help="tiny or coco"),
              supervision_kind: str = typer.Option("points", "--supervision", help="points, masks or boxes"),
              points: int = typer.Option(1, help="random points per instance (supervision=points)"),
              points_from: Path | None = typer.Option(None, help="take the point set of this project/run instead"),
              points_step: int | None = typer.Option(None, help="with --points-from: only answers up to this step"),
              seed: int = typer.Option(0), iterations: int | None = typer.Option(None)) -> None:
    """Train a model from random points, a run's acquired points, full masks, or boxes only."""
    from apis import distributed
    from apis.data.loader import TrainingSet
    from apis.models import build_model, model_config_for
    from apis.supervision import run_answers, supervision, write_training_points
    from apis.train import pick_device, train

    cfg = _config(config, preset)
    ddp = _join_ranks(cfg)
    with distributed.main_first():
        cfg, train_set, val_set = _datasets(cfg, out)
    schedule = cfg.initial if iterations is None else dataclasses.replace(cfg.initial, iterations=iterations)
    given = judged = None
    if supervision_kind == "points" and points_from is not None:
        try:  # only rank 0 opens a store; the others get its points
            local = run_answers(points_from, points_step) if distributed.is_main() else None
        except FileNotFoundError as e:
            fail(str(e))
        # ``auto`` judges its sources on the run's answers at random points only (an Entropy run's later points
        # lie at the objects' edges, where every shape errs); each answer still checks its own object's mask.
        given, judged = distributed.broadcast(local)
    try:
        sup = supervision(train_set, supervision_kind, points, seed, given)
    except ValueError as e:
        fail(str(e))
    pts, mask_ids = sup.points, sup.mask_ids
    if pts is not None and distributed.is_main():
        n = write_training_points(pts, out / "training_points.json")
        console.print(f"{out / 'training_points.json'}: {n} points of {len(pts)} instances")
    device = pick_device(cfg.device)
    with progress_bars() as update:
        pseudo = learnt_from = None
        if cfg.model.pseudo_mask_weight > 0 and supervision_kind != "masks":
            from apis.pseudo_masks import auto_pseudo_masks, training_pseudo_masks

            source = learnt_from = cfg.loop.pseudo_masks
            cut_progress = lambda d, t: update("GrabCut masks", d, t)  # noqa: E731
            if source in ("auto", "refined"):  # refined: a model's first training learns from auto's choice
                pseudo, choice = auto_pseudo_masks(out / "cache", train_set, pts, cut_progress, judged=judged)
                learnt_from = choice.chosen
                if distributed.is_main():
                    if not pts:
                        on = "no answers (boxes only): the box check alone"
                    elif judged is not None:
                        on = f"the answers at random points of {points_from} ({len(judged)} objects)"
                    else:
                        on = f"the random points ({len(pts)} objects)"
                    _report_sources(choice, out / "sources.json", on)
            else:
                pseudo = training_pseudo_masks(out / "cache", train_set, source, pts, cut_progress)
        data = TrainingSet(train_set, points=pts, mask_ids=mask_ids, pseudo_masks=pseudo)

        trained: list[float] = []

        def train_with(w: float, folder: Path):
            model = build_model(model_config_for(dataclasses.replace(cfg.model, pairwise_weight=w), train_set))
            if not trained:  # a box-only start's two models share the backbone: say it once
                console.print(f"backbone {cfg.model.backbone.name}: weights from {model.backbone.weights_source}")
            trained.append(w)
            label = "train" if w == cfg.model.pairwise_weight else "train + pairwise"
            return model, train(model, data, schedule, folder, seed=seed, device=device,
                                progress=lambda d, t, _: update(label, d, t))

        trial = None
        if supervision_kind == "boxes":
            from apis.box_start import trial_weight

            trial = trial_weight(cfg.loop.box_start_pairwise, cfg.model.pairwise_weight, learnt_from)
        if trial is not None:
            model, r = _train_box_start(cfg, train_set, out, trial, learnt_from, train_with, device)
        else:
            model, r = train_with(cfg.model.pairwise_weight, out / "model")
    console.print(f"model: {r.final} ({r.iterations} iterations, {r.seconds:.0f} s)")
    if distributed.is_main():
        _print_eval(model, val_set, device, out / "model" / "val_results.json", cfg.eval_batch_size)
    if ddp:
        distributed.shutdown()


def _train_box_start(cfg, train_set, out: Path, weight: float, learnt_from: str | None, train_with, device):
    """`apis train --supervision boxes` where the pseudo masks lack the image's colours: the model trained without
    and with BoxInst's pairwise term and judged (:func:`apis.box_start.train_judged`; the other one beside OUT/model),
    the verdict kept in OUT/pairwise_check.json."""
    import json

    from apis import distributed
    from apis.atomic import write_json_atomic
    from apis.box_start import pairwise_judge, settle, train_judged

    path = out / "pairwise_check.json"

    def keep(verdict: dict) -> None:
        if distributed.is_main():
            write_json_atomic(verdict, path)

    def settle_folders(model: Path, kept: bool) -> None:
        with distributed.main_first():
            settle(model, kept)

    return train_judged(weight, cfg.model.pairwise_weight, learnt_from,
                        lambda: pairwise_judge(out / "cache", train_set, learnt_from), out / "model", train_with,
                        lambda: json.loads(path.read_text()) if path.is_file() else None, keep,
                        lambda line: console.print(escape(line)), device, cfg.eval_batch_size, settle_folders)


def _report_sources(choice, path: Path, on: str) -> None:
    """Print ``auto``'s source table (:class:`apis.pseudo_masks.SourceChoice`), judged on ``on`` (words), and
    keep it in ``path``."""
    from apis.atomic import write_json_atomic

    write_json_atomic(choice.to_json(), path)
    console.print(f"mask sources judged on {escape(on)} (loop.pseudo_masks: auto), kept in {escape(str(path))}")
    for line in choice.table_lines():
        console.print("  " + escape(line))


def _print_eval(model, val_set, device, results_json: Path, batch_size: int) -> None:
    from apis.evaluate import METRICS, evaluate

    with progress_bars() as update:
        ev = evaluate(model, val_set, device, results_json, batch_size=batch_size,
                      progress=lambda d, t: update("evaluate", d, t))
    t = Table(title=f"COCO evaluation on {val_set.json_path} ({ev.images} images, {ev.seconds:.1f} s)")
    t.add_column("type")
    for m in METRICS:
        t.add_column(m, justify="right")
    for name, res in (("segm", ev.segm), ("bbox", ev.bbox)):
        t.add_row(name, *[f"{res[m]:.2f}" for m in METRICS])
    console.print(t)


@app.command("evaluate")
def evaluate_cmd(checkpoint: Path = typer.Argument(..., help="model_final.pt or checkpoint written by apis"),
                 data: Path = typer.Argument(..., help="COCO json of the split to evaluate"),
                 out: Path | None = typer.Option(None, help="write COCO result json here"),
                 device: str = typer.Option("auto"), batch_size: int = typer.Option(8)) -> None:
    """COCO mask and box AP of a checkpoint on a split."""
    from apis.data.coco import DatasetError, load_coco
    from apis.train import load_model, pick_device

    try:
        ds = load_coco(data)
    except DatasetError as e:
        fail(str(e))
    dev = pick_device(device)
    model = load_model(checkpoint, dev)
    _print_eval(model, ds, dev, out or checkpoint.with_name("results.json"), batch_size)


# ------------------------------------------------------------------------------------------ points
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


# --------------------------------------------------------------------------- labelling with people (issue 6)
queue_app = typer.Typer(no_args_is_help=True, help="Questions for people: export open ones, import answers (CSV/JSON).")
app.add_typer(queue_app, name="queue")


@app.command("serve")
def serve_cmd(project: Path = typer.Argument(..., help="project folder (apis.sqlite + config.yaml)"),
              host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
              port: int = typer.Option(8765, help="TCP port; 0 picks a free one"),
              token: list[str] = typer.Option([], "--token", help="NAME=TOKEN for a named annotator; repeatable"),
              tokens_file: Path | None = typer.Option(None, help="file with one NAME=TOKEN per line"),
              lease_seconds: float = typer.Option(120.0, help="a question not answered in this time is handed "
                                                              "to someone else"),
              review_step: int | None = typer.Option(
                  None, "--review-step", help="also serve /review: people accept or reject M(S)'s masks, from "
                                              "PROJECT/exports/stepS.json (exported first when missing)")) -> None:
    """Let people answer the open point questions in a browser (first drawing the boxes, for a project started with
    `apis init --images`); prints each annotator's login link.
    With --review-step S, people also review the exported masks of step S (lowest trust first)."""
    from apis.config import ConfigError
    from apis.data.coco import DatasetError
    from apis.export import ExportError
    from apis.serve.app import serve
    from apis.serve.auth import TokenError, load_annotators
    from apis.serve.project import Project, ProjectError
    from apis.serve.review import ReviewError, ReviewSet, ensure_export, refresh_command
    from apis.store import Store, StoreError

    try:
        annotators = load_annotators(token, tokens_file)
        proj = Project.load(project)
    except (TokenError, ProjectError) as e:
        fail(str(e))
    if lease_seconds <= 0:
        fail(f"--lease-seconds must be positive, got {lease_seconds}")
    review = None
    if review_step is not None:
        if review_step < 0:
            fail(f"--review-step must be a step ≥ 0, got {review_step}")
        try:
            with progress_bars() as update:
                path = ensure_export(proj.root, review_step, lambda d, t: update("export masks", d, t),
                                     echo=lambda s: console.print(s, markup=False))
            with Store.open(proj.db) as store:
                instances = {i.id: i for i in store.instances()}
            review = ReviewSet.load(path, review_step, instances, refresh=refresh_command(proj.root, review_step))
        except (ExportError, DatasetError, ConfigError, StoreError, ReviewError) as e:
            fail(str(e))
    try:
        serve(proj, annotators, host, port, lease_seconds, echo=lambda s: print(s, flush=True), review=review)
    except OSError as e:
        fail(f"cannot listen on {host}:{port} ({e}); choose another --port (0 picks a free one)")


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


boxes_app = typer.Typer(no_args_is_help=True, help="Boxes people draw on a project started from images alone "
                        "(apis init PROJECT --images DIR).")
app.add_typer(boxes_app, name="boxes")


@boxes_app.command("finish")
def boxes_finish(project: Path = typer.Argument(..., help="project folder (apis init PROJECT --images DIR)"),
                 only_done: bool = typer.Option(False, "--only-done", help="leave the images not marked done out "
                                                "of the pool instead of refusing")) -> None:
    """Make the drawn boxes the pool: write the train json with them, store the instances and post P0's point
    questions for people. The box page does it by itself when the last image is done; running it again changes
    nothing."""
    from apis.serve.box_project import BoxProjectError, finish

    try:
        done = finish(project, only_done, report=lambda line: console.print(line, markup=False))
    except BoxProjectError as e:
        fail(str(e))
    pool = done.pool
    if done.already:
        console.print(f"{project}: finished already: the pool is the {pool.boxes} boxes of {len(pool.images)} images "
                      f"({len(pool.left_out)} left out); {done.waiting} P0 questions were posted", markup=False)
        return
    console.print(f"{project}: the pool is the {pool.boxes} boxes of {len(pool.images)} images, in {done.train_json}",
                  markup=False)
    if pool.left_out:
        n = len(pool.left_out)
        console.print(f"{n} image{' was' if n == 1 else 's were'} not done and {'is' if n == 1 else 'are'} left out "
                      "of the pool (ids "
                      f"{', '.join(map(str, pool.left_out[:20]))}{', …' if len(pool.left_out) > 20 else ''})",
                      markup=False)
    console.print(f"next: people answer P0's {done.waiting} point questions (`apis serve {project}`), then "
                  f"`apis run {project} --people`", markup=False)


if __name__ == "__main__":  # pragma: no cover
    app()
