"""Review decisions through files: `apis queue export --review-step S` writes M(S)'s masks that wait for a
decision (CSV or JSON), `apis queue import` stores the decisions filled in; all or nothing, errors name the row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from serve_project import make_project
from typer.testing import CliRunner

from apis.cli import app as cli_app
from apis.export import export_masks, write_export
from apis.layout import export_path
from apis.serve.exchange import (
    REVIEW_COLUMNS,
    ExchangeError,
    ReviewImportSummary,
    export_reviews,
    import_answers,
    import_file,
    import_reviews,
)
from apis.serve.project import Project
from apis.serve.review import ReviewSet
from apis.store import Store


class HalfModel:
    """Every pixel of Ω at 0.9 for odd instance positions and at 0.6 for even ones (less trusted), no detections."""

    def prediction_sets(self, images, targets):
        return [[torch.full((1, w.height, w.width), 0.6 if g % 2 == 0 else 0.9) for g, w in enumerate(t["windows"])]
                for t in targets]

    def __call__(self, images):
        raise AssertionError("every instance has a prediction set")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose step-0 export (``exports/step0.json``) is written, as `apis serve --review-step 0` would."""
    root = make_project(tmp_path)
    proj = Project.load(root)
    with Store.open(proj.db) as store:
        write_export(export_masks(HalfModel(), proj.dataset, store, max_step=0), export_path(root, 0))
    return root


def _review_set(root: Path, store: Store) -> ReviewSet:
    return ReviewSet.load(export_path(root, 0), 0, {i.id: i for i in store.instances()})


def _rows(out: Path) -> list[dict]:
    if out.suffix == ".csv":
        return list(csv.DictReader(out.open()))
    return json.loads(out.read_text())["reviews"]


def _write(out: Path, rows: list[dict]) -> None:
    if out.suffix == ".csv":
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=REVIEW_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        out.write_text(json.dumps({"reviews": rows}))


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_export_then_import_decisions(project: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"review{suffix}"
    with Store.open(project) as store:
        n = export_reviews(store, _review_set(project, store), out)
        pool = store.instances("train")
    assert n == len(pool)
    rows = _rows(out)
    if suffix == ".csv":
        assert tuple(rows[0]) == REVIEW_COLUMNS and rows[0]["decision"] == ""
        assert json.loads(rows[0]["mask"])["size"] == [pool[0].height, pool[0].width]
    else:
        assert tuple(rows[0]) == REVIEW_COLUMNS and rows[0]["decision"] is None
    scores = [float(r["apis_score"]) for r in rows]
    assert scores == sorted(scores), "least trusted first"
    assert rows[0]["file_name"].startswith("images/")
    rows[0]["decision"], rows[1]["decision"], rows[2]["decision"] = "accept", " Reject ", "skip"
    _write(out, rows)
    with Store.open(project) as store:
        s = import_file(store, out, "rita")
        assert s == ReviewImportSummary(1, 1, 1, 0, n - 3)
        standing = store.reviews()
        first = standing[int(rows[0]["instance_id"])]
        mask = rows[0]["mask"] if suffix == ".json" else json.loads(rows[0]["mask"])
        assert (first.decision, first.reviewer, first.step, first.mask) == ("accept", "rita", 0, mask)
        assert standing[int(rows[1]["instance_id"])].decision == "reject"
        assert len(store.review_log()) == 3  # the skip is logged, not standing
        again = import_reviews(store, out, "rita")  # a second import changes nothing
        assert (again.accepted, again.rejected, again.skipped, again.unchanged) == (0, 0, 0, 3)
        assert len(store.review_log()) == 3
        # The next export leaves the settled objects out (the skipped one still waits).
        assert export_reviews(store, _review_set(project, store), out) == n - 2


def test_import_refuses_the_whole_file_naming_row_and_fix(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "review.csv"
    with Store.open(project) as store:
        export_reviews(store, _review_set(project, store), out)
        rows = _rows(out)
        rows[0]["decision"] = "accept"
        rows[1]["decision"] = "maybe"
        rows[2]["decision"] = "reject"
        rows[2]["mask"] = '{"size": [3, 3], "counts": "00"}'
        rows[3]["decision"] = "reject"
        rows[3]["instance_id"] = "424242"
        rows[4]["decision"] = "accept"
        rows[4]["apis_source"] = "missing"
        _write(out, rows + [dict(rows[0])])
        with pytest.raises(ExchangeError) as err:
            import_file(store, out)
        message = str(err.value)
        assert str(out) in message and "nothing was imported" in message
        assert "line 3: decision 'maybe' is not accept, reject or skip" in message
        assert "line 4: the mask is 3×3 but instance" in message and "keep the mask as exported" in message
        assert "line 5: there is no instance 424242 in this project" in message
        assert "line 6: instance" in message and "nothing to accept; reject it" in message
        assert f"line {len(rows) + 2}: instance" in message and "is also on line 2" in message
        assert store.review_log() == [], "nothing stored"
        with pytest.raises(ExchangeError, match="review decisions, not answers"):
            import_answers(store, out)


def test_queue_cli_exports_and_imports_reviews(project: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "r.json"
    r = runner.invoke(cli_app, ["queue", "export", str(project), str(out), "--review-step", "0"])
    assert r.exit_code == 0, r.output
    assert "to review" in r.output
    data = json.loads(out.read_text())
    for row in data["reviews"]:
        row["decision"] = "reject"
    out.write_text(json.dumps(data))
    r = runner.invoke(cli_app, ["queue", "import", str(project), str(out), "--annotator", "carol"])
    assert r.exit_code == 0, r.output
    assert f"0 accepted, {len(data['reviews'])} rejected" in r.output
    with Store.open(project) as store:
        assert {d.reviewer for d in store.reviews().values()} == {"carol"}
    r = runner.invoke(cli_app, ["queue", "export", str(project), str(out), "--review-step", "1", "--step", "1"])
    assert r.exit_code == 2 and "leave --step out" in r.output
