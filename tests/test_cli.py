"""The command line: data tools, project creation and budgets, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from apis.cli import app
from apis.oracle import MaskOracle, ask, initial_points
from apis.store import Store

runner = CliRunner()


def test_data_synthetic_then_check_prints_summary(tmp_path):
    out = tmp_path / "syn"
    r = runner.invoke(app, ["data", "synthetic", str(out), "--size", "64", "--train-images", "3",
                            "--val-images", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["data", "check", str(out / "train" / "annotations.json")])
    assert r.exit_code == 0, r.output
    assert "images" in r.output and "3" in r.output


def test_data_check_reports_the_record_and_fails(tmp_path, small_synthetic):
    data = json.loads(small_synthetic["train"].read_text())
    data["annotations"][0]["category_id"] = 999
    bad = small_synthetic["train"].parent / "bad.json"
    bad.write_text(json.dumps(data))
    r = runner.invoke(app, ["data", "check", str(bad)])
    assert r.exit_code == 2
    assert f"annotation id {data['annotations'][0]['id']}" in r.output
    assert "999" in r.output


def test_init_answers_p0_and_budget_counts_it(tmp_path, small_synthetic, small_train):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"preset": "tiny", "data": {"train": str(small_synthetic["train"]),
                                                              "val": str(small_synthetic["val"])}}))
    project = tmp_path / "proj"
    r = runner.invoke(app, ["init", str(project), "--config", str(cfg), "--seed", "4"])
    assert r.exit_code == 0, r.output
    with Store.open(project / "apis.sqlite") as store:
        assert store.point_count() == len(small_train.instances())
        assert store.steps() == [0]
    r = runner.invoke(app, ["budget", str(project)])
    assert r.exit_code == 0, r.output
    assert str(len(small_train.instances())) in r.output
    # Running init again must not ask P0 twice.
    r = runner.invoke(app, ["init", str(project), "--config", str(cfg), "--seed", "4"])
    assert r.exit_code == 0, r.output
    with Store.open(project / "apis.sqlite") as store:
        assert store.point_count() == len(small_train.instances())


def test_config_typo_is_an_error_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("preset: tiny\nloop: {stratgies: [random]}\n")
    r = runner.invoke(app, ["init", str(tmp_path / "p"), "--config", str(cfg)])
    assert r.exit_code == 2
    assert "stratgies" in r.output and str(cfg) in r.output


def _tiny_run_config(tmp_path, small_synthetic, **extra) -> Path:
    """A run config on the small built-in set with a model that trains two iterations in a second."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "preset": "tiny", "device": "cpu",
        "data": {"train": str(small_synthetic["train"]), "val": str(small_synthetic["val"])},
        "model": {"backbone": {"pretrained": False}, "fpn_channels": 16, "head_convs": 1, "mask_branch_channels": 16,
                  "mask_branch_convs": 1, "train_min_sizes": [64], "test_min_size": 64},
        "initial": {"iterations": 2, "batch_size": 2, "warmup_iters": 1, "decay_at": []}, **extra}))
    return cfg


@pytest.mark.slow
def test_train_points_from_a_run_uses_exactly_its_point_set(tmp_path, small_synthetic, small_train):
    """Transfer: a model trained with --points-from learns from the run's answers, no more, no fewer; ``auto``
    judges its mask sources on the run's answers at random points only (P0's, not the step's Entropy ones)."""
    cfg = _tiny_run_config(tmp_path, small_synthetic)
    project = tmp_path / "proj"
    assert runner.invoke(app, ["init", str(project), "--config", str(cfg), "--seed", "1"]).exit_code == 0
    # A second step's answers, as a run would have acquired them.
    with Store.open(project / "apis.sqlite") as store:
        answered = {i: {(p.x, p.y) for p in ps} for i, ps in store.points().items()}
        fresh = {q.instance_id: q for q in initial_points(small_train, seed=99)
                 if (q.x, q.y) not in answered[q.instance_id]}
        store.add_points(ask(MaskOracle(small_train), list(fresh.values())[:3], step=1, strategy="entropy"))
        want = {i: sorted((p.x, p.y, p.label) for p in ps) for i, ps in store.points().items()}
        want_p0 = {i: sorted((p.x, p.y, p.label) for p in ps) for i, ps in store.points(max_step=0).items()}
    p0_answers = sum(len(v) for v in want_p0.values())
    assert sum(len(v) for v in want.values()) == p0_answers + 3
    for extra, expected in (([], want), (["--points-step", "0"], want_p0)):
        out = tmp_path / f"transfer{len(extra)}"
        r = runner.invoke(app, ["train", str(out), "--config", str(cfg), "--points-from", str(project), *extra])
        assert r.exit_code == 0, r.output
        used = json.loads((out / "training_points.json").read_text())
        got = {int(i): sorted((*xy, lab) for xy, lab in zip(d["point_coords"], d["point_labels"], strict=True))
               for i, d in used.items()}
        assert got == expected
        assert (out / "model" / "model_final.pt").is_file()
        sources = json.loads((out / "sources.json").read_text())
        assert {s["source"] for s in sources["sources"]} == {"grabcut", "ellipse", "box"}
        # Every source is scored on P0's answers inside the pool's boxes, never on the step's entropy answers.
        assert {s["answers"] for s in sources["sources"]} == {p0_answers}
        assert sum(sources["used"].values()) == len(small_train.instances())
        assert "mask sources judged on the answers at random points" in " ".join(r.output.split())


def test_error_messages_keep_their_square_brackets(tmp_path, small_synthetic):
    """User data in a message is printed as text: rich markup must not eat "[x, y, w, h]" or the values."""
    data = json.loads(small_synthetic["train"].read_text())
    data["annotations"][0]["bbox"] = [1, 2, 3]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    r = runner.invoke(app, ["data", "check", str(bad)])
    assert r.exit_code == 2
    assert "bbox must be [x, y, w, h] (4 numbers), got [1, 2, 3]" in " ".join(r.output.split())


def _apis(*args: str, env: dict | None = None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "apis", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_user_errors_end_in_one_message_not_a_traceback(tmp_path, small_synthetic):
    # A missing checkpoint: FileNotFoundError from deep inside torch.load.
    r = _apis("evaluate", str(tmp_path / "nope.pt"), str(small_synthetic["val"]))
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "nope.pt" in out and "Traceback" not in out and len(out.strip().splitlines()) <= 4
    # Missing backbone weights: WeightsError when the model is built.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"preset": "tiny", "data": {"train": str(small_synthetic["train"]),
                                                              "val": str(small_synthetic["val"])},
                                   "model": {"backbone": {"name": "resnet18", "pretrained": True,
                                                          "weights": str(tmp_path / "nope.pth")}}}))
    r = _apis("train", str(tmp_path / "out"), "--config", str(cfg), "--iterations", "1")
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "nope.pth" in out and "Traceback" not in out and "─" not in out
    # --debug shows the traceback.
    r = _apis("evaluate", str(tmp_path / "nope.pt"), str(small_synthetic["val"]), "--debug")
    assert r.returncode != 0 and "Traceback" in r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("supervision, maps", [("boxes", 0.99), ("boxes", 0.01), ("points", 0.99)])
def test_train_with_a_shape_tries_the_pairwise_term_and_keeps_the_verdict(
        supervision, maps, tmp_path, small_synthetic, monkeypatch):
    """`apis train --supervision boxes` (or `points`) learning from the ellipse trains without and with BoxInst's
    pairwise term as the loop's M0 does (apis.box_start): kept, OUT/model learnt with it; left out, without it; the
    other model is kept beside it. A second run finds the verdict and trains nothing again."""
    from apis import box_start, mask_checks
    from apis.train import load_model

    monkeypatch.setattr(mask_checks, "MIN_CROSS_CHECKED", 1)  # the small set has under 30 objects
    monkeypatch.setattr(box_start, "model_agreement",
                        lambda model, judge, *a: maps if model.cfg.pairwise_weight > 0 else 0.5)
    cfg = _tiny_run_config(tmp_path, small_synthetic, loop={"pseudo_masks": "ellipse"})
    out = tmp_path / supervision
    r = runner.invoke(app, ["train", str(out), "--config", str(cfg), "--supervision", supervision])
    assert r.exit_code == 0, r.output
    verdict = json.loads((out / "pairwise_check.json").read_text())
    kept = maps > 0.5
    assert verdict["kept"] is kept and verdict["shape"] == "ellipse" and verdict["without"] == 0.5
    assert load_model(out / "model" / "model_final.pt").cfg.pairwise_weight == (1.0 if kept else 0.0)
    aside = out / ("model-without-pairwise" if kept else "model-pairwise-rejected")
    assert load_model(aside / "model_final.pt").cfg.pairwise_weight == (0.0 if kept else 1.0)
    said = " ".join(r.output.split())
    assert "tries BoxInst's colour-pairwise term" in said and ("the term is kept" if kept else "left out") in said
    assert ("boxes only and" if supervision == "boxes" else "the answered points and") in said
    monkeypatch.setattr(box_start, "model_agreement", lambda *a: pytest.fail("judged twice"))
    again = runner.invoke(app, ["train", str(out), "--config", str(cfg), "--supervision", supervision])
    assert again.exit_code == 0, again.output
    assert "tries BoxInst's colour-pairwise term" not in " ".join(again.output.split())


@pytest.mark.slow
def test_train_with_a_shape_nothing_can_judge_learns_with_the_term(tmp_path, small_synthetic, monkeypatch):
    """The small set has under 30 of GrabCut's passing masks: `apis train --supervision boxes` learning from the
    ellipse trains OUT/model once, with the pairwise term, and keeps the unjudged verdict."""
    from apis import box_start
    from apis.train import load_model

    monkeypatch.setattr(box_start, "model_agreement", lambda *a: pytest.fail("nothing to judge with"))
    cfg = _tiny_run_config(tmp_path, small_synthetic, loop={"pseudo_masks": "ellipse"})
    out = tmp_path / "boxes"
    r = runner.invoke(app, ["train", str(out), "--config", str(cfg), "--supervision", "boxes"])
    assert r.exit_code == 0, r.output
    verdict = json.loads((out / "pairwise_check.json").read_text())
    assert verdict["kept"] is True and verdict["maps"] is None and verdict["without"] is None
    assert load_model(out / "model" / "model_final.pt").cfg.pairwise_weight == 1.0
    assert sorted(d.name for d in out.iterdir() if d.name.startswith("model")) == ["model"]
    assert "nothing can judge BoxInst's colour-pairwise term" in " ".join(r.output.split())
