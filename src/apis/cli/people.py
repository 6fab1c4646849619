"""``apis serve`` and ``apis boxes``: people answer, review and draw boxes in a browser."""

from __future__ import annotations

from pathlib import Path

import typer

from apis.cli.common import console, fail, progress_bars

boxes_app = typer.Typer(no_args_is_help=True, help="Boxes people draw on a project started from images alone "
                        "(apis init PROJECT --images DIR).")


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

