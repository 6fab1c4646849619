"""apis: active pointly-supervised instance segmentation (Tang et al., ECCV 2022).

Boxes plus a few yes/no point answers per object train an instance-segmentation model; apis chooses
which point to ask about next.
"""

# The command line parses and calls: each group of commands lives in its own module (common: what they share;
# data; runs: projects and comparisons; train; exchange: points, export and queue files; people: serve and
# boxes) and the tables they print in apis.report.tables. Commands are registered here, in the order help lists
# them.

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from apis.cli import data, exchange, people, runs, train
from apis.cli.common import console, fail, progress_bars
from apis.cli.runs import print_table, print_yardsticks

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
app.add_typer(data.data_app, name="data")
app.add_typer(exchange.points_app, name="points")
app.add_typer(exchange.export_app, name="export")
app.add_typer(exchange.queue_app, name="queue")
app.add_typer(people.boxes_app, name="boxes")
app.command()(runs.init)
app.command("budget")(runs.budget_cmd)
app.command()(runs.run)
app.command("compare")(runs.compare_cmd)
app.command()(runs.demo)
app.command("report")(runs.report_cmd)
app.command("train")(train.train_cmd)
app.command("evaluate")(train.evaluate_cmd)
app.command("serve")(people.serve_cmd)


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



@app.callback()
def _one_process_unless_run_or_train(ctx: typer.Context) -> None:
    # torchrun starts the same command in every process: only run and train know how to share the work.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and ctx.invoked_subcommand not in ("run", "train"):
        fail(f"`apis {ctx.invoked_subcommand}` runs in one process; only `apis run` and `apis train` run under "
             "torchrun (see README, Multiple GPUs); start it without torchrun")


__all__ = ["app", "console", "fail", "main", "print_table", "print_yardsticks", "progress_bars", "user_errors"]
