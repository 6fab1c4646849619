"""``apis train`` and ``apis evaluate``: a model from random points, a run's points, masks or boxes, and its COCO
AP on a split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.markup import escape

from apis.cli.common import console, datasets, fail, join_ranks, progress_bars, run_config


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

    cfg = run_config(config, preset)
    ddp = join_ranks(cfg)
    with distributed.main_first():
        cfg, train_set, val_set = datasets(cfg, out)
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
                from apis.box_start import box_teaches_masks

                box_teaches = box_teaches_masks(cfg.model, cfg.loop, supervision_kind == "boxes")
                pseudo, choice = auto_pseudo_masks(out / "cache", train_set, pts, cut_progress, judged=judged,
                                                   box_teaches=box_teaches)
                learnt_from = choice.taught
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
            label = "train" if folder == out / "model" else "train + pairwise"  # the trial beside the model
            return model, train(model, data, schedule, folder, seed=seed, device=device,
                                progress=lambda d, t, _: update(label, d, t))

        trial = None
        if supervision_kind in ("boxes", "points"):
            from apis.box_start import start_weight, trial_weight

            weight = start_weight(cfg.loop, supervision_kind == "boxes", cfg.model.architecture)
            trial = trial_weight(weight, cfg.model.pairwise_weight, learnt_from)
        if trial is not None:
            start = "boxes only" if supervision_kind == "boxes" else "the answered points"
            model, r = _train_m0_judged(cfg, train_set, out, trial, learnt_from, train_with, device, start)
        else:
            model, r = train_with(cfg.model.pairwise_weight, out / "model")
    console.print(f"model: {r.final} ({r.iterations} iterations, {r.seconds:.0f} s)")
    if distributed.is_main():
        _print_eval(model, val_set, device, out / "model" / "val_results.json", cfg.eval_batch_size)
    if ddp:
        distributed.shutdown()


def _train_m0_judged(cfg, train_set, out: Path, weight: float, learnt_from: str | None, train_with, device,
                     start: str):
    """`apis train --supervision boxes` or `points` where the pseudo masks lack the image's colours: the model
    trained without and with BoxInst's pairwise term and judged (:func:`apis.box_start.train_judged`; the other
    one beside OUT/model), or with it alone where too few of GrabCut's masks pass to judge; the verdict kept in
    OUT/pairwise_check.json."""
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
                        lambda line: console.print(escape(line)), device, cfg.eval_batch_size, settle_folders, start)


def _report_sources(choice, path: Path, on: str) -> None:
    """Print ``auto``'s source table (:class:`apis.pseudo_masks.SourceChoice`), judged on ``on`` (words), and
    keep it in ``path``."""
    from apis.atomic import write_json_atomic

    write_json_atomic(choice.to_json(), path)
    console.print(f"mask sources judged on {escape(on)} (loop.pseudo_masks: auto), kept in {escape(str(path))}")
    for line in choice.table_lines():
        console.print("  " + escape(line))


def _print_eval(model, val_set, device, results_json: Path, batch_size: int) -> None:
    """Evaluate ``model`` on ``val_set`` (results to ``results_json``) and print the COCO table."""
    from apis.evaluate import METRICS, evaluate
    from apis.report.tables import eval_table

    with progress_bars() as update:
        ev = evaluate(model, val_set, device, results_json, batch_size=batch_size,
                      progress=lambda d, t: update("evaluate", d, t))
    console.print(eval_table(ev, METRICS, val_set.json_path))


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

