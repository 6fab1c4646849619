"""A start from images alone: `apis init --images` on CC0 DSB images copied at test time, the refusals, the pool
made of the drawn boxes (`apis boxes finish`), P0 posted as `apis init --people` posts it, once, and the box time in
the hours."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from boxes_project import box_project, dsb_images
from PIL import Image
from typer.testing import CliRunner

from apis.cli import app
from apis.config import load_config
from apis.data.coco import load_coco
from apis.data.images import load_rgb
from apis.evaluate import METRICS, evaluate
from apis.serve.box_project import BoxProjectError, finish
from apis.store import DB_NAME, BoxRequest, Store

runner = CliRunner()


def draw(project: Path, boxes: dict[int, list[tuple]], done: tuple[int, ...] | None = None) -> None:
    """Boxes (xyxy, category) drawn by alice on images, then those images (default: all of ``boxes``) done."""
    with Store.open(project / DB_NAME) as store:
        for image, bs in boxes.items():
            for k, (*box, cat) in enumerate(bs):
                store.box_op(BoxRequest(f"add-{image}-{k}-xx", "alice", "add", image_id=image, box=tuple(box),
                                        category_id=cat))
        for image in boxes if done is None else done:
            store.box_op(BoxRequest(f"done-{image}-xxxx", "alice", "done", image_id=image))


def test_init_copies_the_images_and_the_project_waits_for_boxes(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    paths = dsb_images(folder, 3)
    # An EXIF-rotated JPEG (shown 256 wide, 320 high) and a 16-bit TIFF, made from the DSB pixels.
    rgb = load_rgb(paths[0])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "deep.tif")
    (folder / "notes.txt").write_text("not an image")
    project = tmp_path / "p"
    r = runner.invoke(app, ["init", str(project), "--images", str(folder), "--categories", "cell, debris"])
    assert r.exit_code == 0, r.output
    assert f"apis serve {project}" in r.output and "1 stored as PNG" in r.output
    cfg = load_config(project / "config.yaml")
    assert cfg.data.train == cfg.data.val == str((project / "data" / "train.json").resolve())
    ds = load_coco(cfg.data.train)  # checks every file and its size as shown
    assert [c.name for c in ds.categories] == ["cell", "debris"] and ds.instances() == []
    by_name = {im.file_name: im for im in ds.images}
    assert len(by_name) == 5 and all(name.startswith("images/") for name in by_name)
    assert (by_name["images/rotated.jpg"].width, by_name["images/rotated.jpg"].height) == (256, 320)
    assert load_rgb(project / "data" / "images" / "rotated.jpg").shape == (320, 256, 3)
    assert "images/deep.png" in by_name, "a 16-bit TIFF is stored as the PNG the loader makes of it"
    assert np.array_equal(load_rgb(project / "data" / "images" / "deep.png"), load_rgb(folder / "deep.tif"))
    assert (project / "data" / "images" / paths[1].name).read_bytes() == paths[1].read_bytes()
    with Store.open(project / DB_NAME) as store:
        assert [(im.image_id, im.file_name, im.width, im.height) for im in store.box_images()] == [
            (im.id, im.file_name, im.width, im.height) for im in ds.images]
        assert store.box_project() == {"categories": [[1, "cell"], [2, "debris"]], "seed": 0}
    # Nothing can run before the boxes exist: P0 would be empty and consumed.
    r = runner.invoke(app, ["run", str(project), "--people"])
    assert r.exit_code == 3 and "5 of 5 images still wait for their boxes" in r.output
    with Store.open(project / DB_NAME) as store:
        assert store.phase("p0") is None and store.instances() == []
    r = runner.invoke(app, ["init", str(project), "--images", str(folder)])
    assert r.exit_code == 2 and "is a project already" in r.output


@pytest.mark.parametrize("case", ["empty", "unreadable", "duplicate", "missing", "categories"])
def test_init_refuses_a_folder_it_cannot_use_in_one_line_per_problem(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    args, expect = [], []
    if case == "empty":
        (folder / "sub").mkdir()
        dsb_images(folder / "sub", 1)
        expect = ["holds no image", "subfolders are not searched"]
    elif case == "unreadable":
        dsb_images(folder, 2)
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        good = dsb_images(tmp_path / "src", 1, first=5)[0]
        (folder / "cut.png").write_bytes(good.read_bytes()[:400])
        expect = ["2 problems", "broken.png: cannot be read as an image", "cut.png: cannot be read as an image",
                  "replace it with a readable"]
    elif case == "duplicate":
        png = dsb_images(folder, 1)[0]
        Image.open(png).convert("RGB").save(folder / f"{png.stem}.jpg")
        expect = [f"share the name '{png.stem}'", "rename or remove one"]
    elif case == "missing":
        folder = tmp_path / "nowhere"
        expect = ["is not a folder"]
    else:
        dsb_images(folder, 1)
        args, expect = ["--categories", "cell,,cell"], ["a name is empty"]
    project = tmp_path / "p"
    r = runner.invoke(app, ["init", str(project), "--images", str(folder), *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for text in expect:
        assert text in " ".join(r.output.split()), r.output
    assert not (project / DB_NAME).exists() and not (project / "config.yaml").exists()


def test_finish_writes_box_only_coco_and_posts_p0_as_init_people_does(tmp_path: Path) -> None:
    project = box_project(tmp_path, n=3, categories=("cell", "debris"), seed=2)
    draw(project, {1: [(10.5, 20, 60, 80.25, 1), (100, 100, 140, 130, 2)], 2: [(0, 0, 30, 30, 1)]}, done=(1, 2))
    r = runner.invoke(app, ["boxes", "finish", str(project)])
    assert r.exit_code == 2 and "1 of 3 images are not done yet" in r.output and "--only-done" in r.output
    r = runner.invoke(app, ["boxes", "finish", str(project), "--only-done"])
    assert r.exit_code == 0, r.output
    assert "3 boxes of 2 images" in r.output and "1 image was not done and is left out" in r.output
    train = json.loads((project / "data" / "train.json").read_text())
    assert [im["id"] for im in train["images"]] == [1, 2], "an image not done is left out, not taught as background"
    anns = sorted((a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in train["annotations"])
    assert anns == [(1, 1, 1, [10.5, 20.0, 49.5, 60.25], 49.5 * 60.25), (2, 1, 2, [100.0, 100.0, 40.0, 30.0], 1200.0),
                    (3, 2, 1, [0.0, 0.0, 30.0, 30.0], 900.0)]
    assert all("segmentation" not in a for a in train["annotations"])
    ds = load_coco(project / "data" / "train.json")
    assert [(a.id, a.box, a.segmentation) for a in ds.instances()] == [
        (1, (10.5, 20.0, 60.0, 80.25), None), (2, (100.0, 100.0, 140.0, 130.0), None),
        (3, (0.0, 0.0, 30.0, 30.0), None)]
    with Store.open(project / DB_NAME) as store:
        assert [(i.id, i.box) for i in store.instances("train")] == [(a.id, a.box) for a in ds.instances()]
        ours = [(q.instance_id, q.x, q.y, q.alternates, q.strategy) for q in store.queries(step=0)]
    assert len(ours) == 3
    # `apis init --people` on the same json and seed posts the same questions.
    other = tmp_path / "same"
    cfg = tmp_path / "same.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"train": str(project / "data" / "train.json"),
                                            "val": str(project / "data" / "train.json")}}))
    r = runner.invoke(app, ["init", str(other), "--config", str(cfg), "--people", "--seed", "2"])
    assert r.exit_code == 3, r.output
    with Store.open(other / DB_NAME) as store:
        assert [(q.instance_id, q.x, q.y, q.alternates, q.strategy) for q in store.queries(step=0)] == ours
    r = runner.invoke(app, ["boxes", "finish", str(project)])
    assert r.exit_code == 0 and "finished already" in r.output
    with Store.open(project / DB_NAME) as store:
        assert len(store.queries(step=0)) == 3


def test_finish_killed_half_way_finishes_once(tmp_path: Path, monkeypatch) -> None:
    from apis.loop import ActiveRun

    project = box_project(tmp_path)
    draw(project, {1: [(10, 10, 40, 40, 1), (50, 50, 90, 80, 1)], 2: [(5, 5, 25, 25, 1)]})
    real = ActiveRun.initial_points

    def crash_after_posting(self, store):
        try:
            real(self, store)
        finally:
            raise SystemExit("killed")  # after P0 is posted, before the finish is recorded

    monkeypatch.setattr(ActiveRun, "initial_points", crash_after_posting)
    with pytest.raises(SystemExit):
        finish(project, report=lambda s: None)
    monkeypatch.setattr(ActiveRun, "initial_points", real)
    with Store.open(project / DB_NAME) as store:
        assert store.box_pool() is not None and store.boxes_finished() is None
        assert len(store.queries(step=0)) == 3
    lines: list[str] = []
    done = finish(project, report=lines.append)
    assert (done.waiting, done.already) == (3, False) and not any("posted" in line for line in lines)
    assert finish(project, report=lines.append).already
    with Store.open(project / DB_NAME) as store:
        assert len(store.queries(step=0)) == 3 and store.boxes_finished()["boxes"] == 3


def test_two_finishes_at_once_post_p0_once(tmp_path: Path) -> None:
    project = box_project(tmp_path)
    draw(project, {1: [(10, 10, 40, 40, 1)], 2: [(5, 5, 25, 25, 1), (30, 30, 60, 70, 1)]})
    results, errors = [], []

    def one() -> None:
        try:
            results.append(finish(project, report=lambda s: None))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == 3 and all(r.waiting == 3 for r in results)
    with Store.open(project / DB_NAME) as store:
        queries = store.queries(step=0)
        assert len(store.instances()) == 3
    assert sorted(q.instance_id for q in queries) == [1, 2, 3], "one P0 question per box, posted once"


def test_finish_refuses_a_project_given_its_boxes_and_an_empty_pool(tmp_path: Path, small_synthetic) -> None:
    project = box_project(tmp_path)
    draw(project, {1: [], 2: []})
    with pytest.raises(BoxProjectError, match="no box stands on the 2 done images"):
        finish(project)
    given = tmp_path / "given"
    cfg = tmp_path / "given.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"train": str(small_synthetic["train"]),
                                            "val": str(small_synthetic["val"])}}))
    assert runner.invoke(app, ["init", str(given), "--config", str(cfg), "--people"]).exit_code == 3
    r = runner.invoke(app, ["boxes", "finish", str(given)])
    assert r.exit_code == 2 and "was not started from images" in r.output


def test_box_time_is_in_the_budget_and_the_step_hours(tmp_path: Path) -> None:
    from apis.loop import ActiveRun
    from apis.report.runs import Arm, run_rows

    project = box_project(tmp_path)
    draw(project, {1: [(10, 10, 40, 40, 1), (50, 50, 90, 80, 1)], 2: [(5, 5, 25, 25, 1)]})
    assert runner.invoke(app, ["boxes", "finish", str(project)]).exit_code == 0
    r = runner.invoke(app, ["budget", str(project)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "boxes drawn by people │ 3" in text and "boxes at 7.0 s" in text and "│ 21 s" in text
    cfg = load_config(project / "config.yaml")
    ds = load_coco(cfg.data.train)
    run = ActiveRun(project, cfg, ds, ds, "random", 0, None, report=lambda s: None, people=True)
    metrics = {"segm": dict.fromkeys(METRICS, -1.0), "bbox": dict.fromkeys(METRICS, 1.0)}
    with Store.open(project / DB_NAME) as store:
        assert run.measures.step_result(store, 0, metrics).annotation_hours == round(3 * 7.0 / 3600, 4)
        store.mark_phase("eval_0", metrics)
    assert float(run_rows(Arm("random", 0, project), cfg)[0]["annotation_hours"]) == round(3 * 7.0 / 3600, 4)


class _OneBox(torch.nn.Module):
    """A stand-in model: one detection per image, the box [10, 10, 40, 40] with a full mask inside it."""

    def forward(self, images):
        outs = []
        for im in images:
            h, w = im.shape[-2:]
            mask = torch.zeros(1, 1, h, w)
            mask[..., 10:40, 10:40] = 1
            outs.append({"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.tensor([0]),
                         "scores": torch.tensor([0.9]), "masks": mask})
        return outs


def test_a_pool_of_drawn_boxes_evaluates_box_ap_and_no_mask_ap(tmp_path: Path) -> None:
    project = box_project(tmp_path)
    draw(project, {1: [(10, 10, 40, 40, 1)], 2: [(10, 10, 40, 40, 1)]})
    finish(project, report=lambda s: None)
    ev = evaluate(_OneBox(), load_coco(project / "data" / "train.json"), batch_size=2)
    assert set(ev.segm.values()) == {-1.0}, "no mask to compare with: COCO's 'nothing to measure'"
    assert ev.bbox["AP50"] == pytest.approx(100.0)


@pytest.mark.slow
def test_from_images_to_m0_with_people(tmp_path: Path, one_thread) -> None:
    """init --images → boxes → finish → P0 answered → `apis run --people --steps 0` trains and evaluates M0."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "preset": "tiny", "device": "cpu",
        "model": {"backbone": {"pretrained": False}, "fpn_channels": 16, "head_convs": 1, "mask_branch_channels": 16,
                  "mask_branch_convs": 1, "train_min_sizes": [64], "test_min_size": 64, "max_size": 128},
        "initial": {"iterations": 2, "batch_size": 2, "warmup_iters": 1, "decay_at": []}}))
    folder = tmp_path / "imgs"
    dsb_images(folder, 2)
    project = tmp_path / "p"
    assert runner.invoke(app, ["init", str(project), "--images", str(folder), "--config", str(cfg)]).exit_code == 0
    draw(project, {1: [(20, 20, 60, 60, 1), (100, 40, 150, 90, 1)], 2: [(30, 30, 80, 70, 1)]})
    assert runner.invoke(app, ["boxes", "finish", str(project)]).exit_code == 0
    with Store.open(project / DB_NAME) as store:
        for q in store.open_queries(0):
            store.answer_query(q.id, "yes", "alice")
    r = runner.invoke(app, ["run", str(project), "--people", "--steps", "0"])
    assert r.exit_code == 0, r.output
    with Store.open(project / DB_NAME) as store:
        assert store.point_count() == 3 and store.phase("eval_0")["segm"]["AP"] == -1.0


def test_a_validation_json_in_the_config_must_have_the_boxes_categories(tmp_path: Path, small_synthetic) -> None:
    folder = tmp_path / "imgs"
    dsb_images(folder, 1)
    cfg = tmp_path / "val.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"val": str(small_synthetic["val"])}}))
    r = runner.invoke(app, ["init", str(tmp_path / "p1"), "--images", str(folder), "--config", str(cfg),
                            "--categories", "cell"])
    assert r.exit_code == 2 and "--categories ring,crescent,star,l_shape,c_shape,bar" in " ".join(r.output.split())
    assert not (tmp_path / "p1" / DB_NAME).exists()
    names = "ring,crescent,star,l_shape,c_shape,bar"
    r = runner.invoke(app, ["init", str(tmp_path / "p2"), "--images", str(folder), "--config", str(cfg),
                            "--categories", names])
    assert r.exit_code == 0, r.output
    kept = load_config(tmp_path / "p2" / "config.yaml").data
    assert kept.val == str(small_synthetic["val"]) and kept.train.endswith("data/train.json")
    cfg.write_text(yaml.safe_dump({"data": {"train": str(small_synthetic["train"])}}))
    r = runner.invoke(app, ["init", str(tmp_path / "p3"), "--images", str(folder), "--config", str(cfg)])
    assert r.exit_code == 2 and "leave data.train out of the config" in r.output
