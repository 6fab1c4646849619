"""The ``apis`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Dataset tools: check a COCO file, build the synthetic set.")
app.add_typer(data_app, name="data")


if __name__ == "__main__":  # pragma: no cover
    app()
