"""apis report: on a finished tiny comparison it writes one self-contained HTML page that embeds every plot,
each plot a real image; Table S1 holds the paired ΔAP to Random; the trainer logs point accuracy per point
group (random P0 vs acquired), and logs from before that still report ("not logged")."""

from __future__ import annotations

import base64
import csv
import dataclasses
import html as htmllib
import re
import statistics
from pathlib import Path

import pytest
import torch
from conftest import tiny_model_config
from PIL import Image
from typer.testing import CliRunner

from apis.cli import app
from apis.config import preset
from apis.data.loader import TrainingSet
from apis.experiment import compare, read_results
from apis.models.condinst import CondInst
from apis.report.figures import point_accuracy_curves
from apis.report.html import table_s1, write_report
from apis.report.runs import ReportError, load
from apis.train import Schedule, _append_log, train

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
STRATEGIES = ["random", "entropy"]
PLOTS = ["ap_vs_step", "ap_vs_hours", "pool_iou_vs_hours", "misclassified", "boundary_distance", "point_accuracy",
         *(f"gallery_{s}" for s in STRATEGIES)]


def _cfg(data: dict[str, Path]):
    cfg = preset("tiny")
    sched = Schedule(iterations=3, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=10, log_every=1)
    # Absolute data paths, as `apis compare` writes them into config.yaml: the gallery reads the pool from there.
    paths = dataclasses.replace(cfg.data, train=str(data["train"]), val=str(data["val"]))
    return dataclasses.replace(cfg, data=paths, model=tiny_model_config(), initial=sched, finetune=sched, device="cpu",
                               eval_batch_size=3, loop=dataclasses.replace(cfg.loop, strategies=STRATEGIES, steps=1,
                                                                           seeds=[0, 1]))


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, small_synthetic, small_train, small_val, one_thread) -> Path:
    out = tmp_path_factory.mktemp("report") / "cmp"
    compare(out, _cfg(small_synthetic), small_train, small_val, report=lambda m: None)
    return out


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def _non_blank_png(path: Path) -> None:
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.width > 100 and im.height > 100, path
        assert im.convert("RGB").getcolors(maxcolors=1) is None, f"{path} is a single colour"


@pytest.fixture(scope="module")
def report_dir(comparison, tmp_path_factory) -> Path:
    before = _files(comparison)
    out = tmp_path_factory.mktemp("out") / "report"
    result = CliRunner().invoke(app, ["report", str(comparison), "--out", str(out), "--instances", "3"])
    assert result.exit_code == 0, result.output
    assert _files(comparison) == before, "the report only reads the comparison: no file written or touched"
    return out


@pytest.mark.slow
def test_report_of_a_comparison_embeds_every_plot_and_table_s1(comparison, report_dir):
    out = report_dir
    page = (out / "report.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page, "self-contained"
    for name in PLOTS:
        png = out / f"{name}.png"
        _non_blank_png(png)
        assert f'data-file="{name}.png"' in page
        assert base64.b64encode(png.read_bytes()).decode() in page, f"{name}.png is embedded as it is on disk"
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == len(PLOTS)

    # Table S1: each metric and its paired difference to Random; Entropy's ΔAP at P1 is the mean over seeds.
    table = page[page.index('<table class="s1">'):]
    table = table[: table.index("</table>")]
    for m in ("AP", "APs", "APm", "APl"):
        assert f"<th>Δ{m}</th>" in table
    rows = read_results(comparison / "results.csv")
    ap = {(r["strategy"], r["seed"], r["step"]): float(r["AP"]) for r in rows}
    delta = statistics.fmean(ap[("entropy", s, "1")] - ap[("random", s, "1")] for s in ("0", "1"))
    p1 = table[table.index("P1:"):]
    entropy_row = re.search(r"<tr><td>Entropy</td>(.*?)</tr>", p1).group(1)
    cells = [htmllib.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", entropy_row)]
    assert cells[1].startswith(f"{delta:+.2f}"), cells
    assert re.search(r"<tr><td>Random</td><td>[^<]*</td><td class=\"na\">—</td>", p1), "no Δ for Random itself"


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)")
def test_report_shows_every_image_in_a_browser_without_fetching_anything(report_dir):
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto((report_dir / "report.html").as_uri())
            page.wait_for_load_state("load")
            sizes = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight])")
        finally:
            browser.close()
    assert len(sizes) == len(PLOTS)
    assert all(done and w > 100 and h > 100 for done, w, h in sizes), sizes
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == [], "nothing is fetched"


@pytest.mark.slow
def test_point_accuracy_is_logged_per_group_and_old_logs_still_report(comparison, tmp_path):
    source = load(comparison)
    curves, starts = point_accuracy_curves(source)
    assert set(curves) == set(STRATEGIES) and starts == [0, 3]
    for strategy in STRATEGIES:
        x, acc = curves[strategy]["random"]
        assert list(x) == [1, 2, 3, 4, 5, 6], "P0 points are trained on at every step"
        assert ((acc >= 0) & (acc <= 1)).all()
        x, acc = curves[strategy]["acquired"]
        assert list(x) == [4, 5, 6], "acquired points exist from step 1 on"
    # Logs written before apis logged point accuracy: the report still runs and says so.
    for log in comparison.rglob("log.csv"):
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [k for k in rows[0] if not k.startswith("point_acc_")]
        with open(log, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keep, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    assert point_accuracy_curves(source)[0] == {}
    run = comparison / "seed0" / "entropy"
    report = write_report(run, tmp_path / "run_report", gallery_step_wanted=5, gallery_size=2, log=lambda m: None)
    figures = {f.path.name: f for f in report.figures}
    assert {"point_accuracy.png", "gallery_entropy.png", "misclassified.png"} <= set(figures)
    assert "step 1" in figures["gallery_entropy.png"].title, "the last finished step when the one asked is later"
    for f in report.figures:
        _non_blank_png(f.path)
    assert "No Random arm" in report.html.read_text()


def test_table_s1_gives_paired_differences_to_random():
    def row(strategy, seed, step, ap):
        return {"strategy": strategy, "seed": str(seed), "step": str(step), "annotation_hours": "0.1",
                "AP": str(ap), "APs": str(ap / 2), "APm": "", "APl": str(ap * 2)}

    rows = [row("random", 0, 0, 1.0), row("random", 1, 0, 1.0), row("entropy", 0, 0, 1.0), row("entropy", 1, 0, 1.0),
            row("random", 0, 1, 1.0), row("random", 1, 1, 2.0), row("entropy", 0, 1, 1.5), row("entropy", 1, 1, 3.0)]
    table = table_s1(rows)
    p1 = table[table.index("P1:"):]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", re.search(r"<tr><td>Entropy</td>(.*?)</tr>", p1).group(1))
    # AP: mean 2.25 ± sd 0.75; Δ over seeds 0.5 and 1.0: +0.75 ± se 0.25. APs halves both; APm is missing.
    assert [htmllib.unescape(c) for c in cells] == ["2.25 ± 0.75", "+0.75 ± 0.25", "1.12 ± 0.38", "+0.38 ± 0.12",
                                                    "—", "—", "4.50 ± 1.50", "+1.50 ± 0.50"]
    assert 'class="pos"' in p1 and "No Random arm" not in table
    p0 = table[table.index("P0:"):table.index("P1:")]
    assert p0.count("<tr><td>") == 1 and "every strategy (the same M0)" in p0, "one row for the shared M0"
    assert "No Random arm" in table_s1([r for r in rows if r["strategy"] == "entropy"])


def test_point_statistics_count_random_and_acquired_points(one_thread):
    torch.manual_seed(0)
    model = CondInst(tiny_model_config(num_classes=2)).train()
    target = {"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0], [30.0, 10.0, 60.0, 46.0]]), "labels": torch.tensor([0, 1]),
              "points": torch.tensor([[[20, 20], [5, 5]], [[50, 30], [0, 0]]]),
              "point_labels": torch.tensor([[1, 0], [1, -1]]), "point_steps": torch.tensor([[0, 2], [0, -1]])}
    out = model([torch.rand(3, 64, 64)], [target], point_stats=True)
    stats = {k: float(v) for k, v in out.items() if k.startswith("stat_")}
    assert stats["stat_points_random"] == 2 and stats["stat_points_acquired"] == 1, "padding is no point"
    assert 0 <= stats["stat_right_random"] <= 2 and 0 <= stats["stat_right_acquired"] <= 1
    assert all(not v.requires_grad for k, v in out.items() if k.startswith("stat_"))
    assert not any(k.startswith("stat_") for k in model([torch.rand(3, 64, 64)], [target])), "only when asked"


def test_training_logs_point_accuracy_and_extends_an_older_log(small_train, tmp_path, one_thread):
    points = {a.id: [(int(a.box[0]) + 1, int(a.box[1]) + 1, 0, 0), (int(a.box[0]) + 2, int(a.box[1]) + 1, 1, 1)]
              for a in small_train.instances()}
    torch.manual_seed(0)
    sched = Schedule(iterations=2, batch_size=2, warmup_iters=1, log_every=1)
    train(CondInst(tiny_model_config()), TrainingSet(small_train, points=points), sched, tmp_path / "run")
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["iteration"] for r in rows] == ["1", "2"]
    for r in rows:
        assert 0 <= float(r["point_acc_random"]) <= 1 and 0 <= float(r["point_acc_acquired"]) <= 1
    # A log begun by an apis without these columns gets them, the old rows kept with empty cells.
    old = tmp_path / "old.csv"
    old.write_text("iteration,loss,seconds\n1,0.5,1.0\n")
    _append_log(old, {"iteration": 2, "loss": 0.4, "point_acc_random": 0.75, "seconds": 2.0})
    with open(old, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"iteration": "1", "loss": "0.5", "seconds": "1.0", "point_acc_random": ""},
                    {"iteration": "2", "loss": "0.4", "seconds": "2.0", "point_acc_random": "0.75"}]


def test_report_names_what_it_cannot_read(tmp_path):
    with pytest.raises(ReportError, match="neither a run folder"):
        (tmp_path / "config.yaml").write_text("preset: tiny\n")
        load(tmp_path)
    with pytest.raises(ReportError, match="no such folder"):
        load(tmp_path / "missing")
