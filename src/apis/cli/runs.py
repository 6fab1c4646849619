"""``apis init``, ``budget``, ``run``, ``compare``, ``demo`` and ``report``: a project or comparison from start to
its tables (:mod:`apis.report.tables`) and HTML report."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape

from apis.cli.common import console, datasets, fail, join_ranks, progress_bars, run_config


def init(project: Path = typer.Argument(..., help="project folder (created)"),
         config: Path | None = typer.Option(None, help="YAML run config"),
         preset: str | None = typer.Option(None, help="tiny or coco"),
         seed: int = typer.Option(0, help="seed of P0"),
         people: bool = typer.Option(False, help="people answer P0 (apis serve) instead of the json's GT masks"),
         images: Path | None = typer.Option(None, help="start from this folder of images alone (png, jpg, tif, "
                                            "bmp, webp): people draw the boxes on the box page of `apis serve`"),
         categories: str | None = typer.Option(None, help="with --images: the boxes' categories, comma-separated "
                                               "(default: object)"),
         ) -> None:
    """Create a project: store the pool's instances and answer P0 (one random point per instance).

    With --people, P0's questions are posted for people and the command exits with code 3. With --images, the
    project starts from images alone: people draw the boxes first (`apis serve PROJECT`), then P0 is posted."""
    from apis.config import dump_config
    from apis.loop import ActiveRun, WaitingForPeople, mask_oracle
    from apis.store import Store

    cfg = run_config(config, preset)
    if images is not None or categories is not None:
        _init_from_images(project, images, categories, cfg, seed)
        return
    project.mkdir(parents=True, exist_ok=True)
    cfg, train_set, val_set = datasets(cfg, project)
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
    from apis.report.tables import budget_table
    from apis.store import Store

    with Store.open(project / "apis.sqlite") as store:
        n_inst = len(store.instances("train"))
        b = budget(store, cfg.cost, split="train")
        steps = store.steps()
        drawn = drawn_boxes(store) if store.box_project() is not None else None  # None: the json gave the boxes
    console.print(budget_table(project, n_inst, b, steps, drawn, cfg.cost))


def budget_cmd(project: Path = typer.Argument(..., help="project folder")) -> None:
    """Points, masks, review decisions and the boxes people drew so far, in counts and in hours."""
    from apis.config import load_config

    if not (project / "apis.sqlite").exists():
        fail(f"{project}: no apis.sqlite here; create the project with `apis init {project}`")
    _print_budget(project, load_config(project / "config.yaml") if (project / "config.yaml").exists()
                  else load_config())


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
    from apis.report.tables import run_table

    if config is None and (project / "config.yaml").exists():
        config = project / "config.yaml"
    cfg = run_config(config, preset, steps)
    ddp = join_ranks(cfg)
    cfg = distributed.broadcast(cfg)  # every rank runs rank 0's config
    with distributed.main_first():  # rank 0 builds the synthetic set; the others read it
        cfg, train_set, val_set = datasets(cfg, project)
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
    console.print(run_table(results, strategy, seed))
    if ddp:
        distributed.shutdown()


def compare_cmd(out: Path = typer.Argument(..., help="comparison folder (created or resumed)"),
                config: Path | None = typer.Option(None, help="YAML run config"),
                preset: str | None = typer.Option(None, help="tiny or coco"),
                strategies: str | None = typer.Option(None, help="comma-separated, e.g. random,entropy"),
                seeds: str | None = typer.Option(None, help="comma-separated, e.g. 0,1,2"),
                steps: int | None = typer.Option(None)) -> None:
    """Compare strategies from a shared P0 and M0 per seed; writes results.csv and plots, prints the table."""
    cfg = run_config(config, preset, steps, strategies, seeds)
    _compare(out, cfg)


def _compare(out: Path, cfg) -> None:
    from apis.experiment import compare, read_results
    from apis.report.plots import plot_comparison, plot_pool_iou

    t0 = time.time()
    cfg, train_set, val_set = datasets(cfg, out)
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
    """Print a comparison's tables (:func:`apis.report.tables.comparison_tables`)."""
    from apis.report.tables import comparison_tables

    for table in comparison_tables(rows):
        console.print(table)


def print_yardsticks(rows: list[dict]) -> None:
    """Print the no-model yardsticks beside the model's pool IoU (:func:`apis.report.tables.yardstick_table`)."""
    from apis.report.tables import yardstick_table

    console.print(yardstick_table(rows))


def demo(out: Path = typer.Option(Path("demo"), help="output folder (resumed if it exists)")) -> None:
    """The main job: Random vs Entropy, P0..P3, on the built-in dataset, on the CPU (configs/demo.yaml: the tiny
    preset shortened to end within 15 minutes on 2 cores: M0 400 iterations, 60 a step, yardsticks on 200 objects)."""
    from apis.config import DEMO_OVERRIDES, load_config

    cfg = load_config(None, DEMO_OVERRIDES)
    console.print("[bold]apis demo[/bold]: Random vs Entropy for P0..P3 on the built-in synthetic dataset "
                  "(tiny preset, EfficientNet-Lite0 ImageNet backbone). Resumes if interrupted.")
    _compare(out, cfg)


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
