"""What every command of ``apis`` shares: the console, progress bars, the one-line failure, a run's config and
data sets."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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


def fail(message: str) -> None:
    # The message holds user data ("bbox must be [x, y, w, h]"): printed as text, never as rich markup.
    console.print("[red]error:[/red]", escape(message))
    raise typer.Exit(2)



def join_ranks(cfg) -> bool:
    """Under torchrun, join the other processes (apis.distributed) and keep only rank 0's output; False
    when this is the only process."""
    from apis import distributed

    try:
        ddp = distributed.setup(cfg.device)
    except ValueError as e:
        fail(str(e))
    console.quiet = ddp and not distributed.is_main()
    return ddp



def datasets(cfg, root: Path):
    """:func:`apis.splits.run_splits` with a progress bar; a bad config or file ends the command."""
    from apis.config import ConfigError
    from apis.data.coco import DatasetError
    from apis.splits import run_splits

    try:
        with progress_bars() as update:
            return run_splits(cfg, root, progress=lambda a, b: update("synthetic data", a, b))
    except (ConfigError, DatasetError) as e:
        fail(str(e))


def run_config(config: Path | None, preset: str | None, steps: int | None = None, strategies: str | None = None,
               seeds: str | None = None):
    """The run config of ``config`` (YAML; None: the defaults) with the command line's overrides (``strategies``
    and ``seeds`` comma-separated); a bad config ends the command."""
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

