"""The command line: data tools, project creation and budgets, config errors."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from apis.cli import app
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
