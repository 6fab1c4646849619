"""`apis export masks ... --format`: a real tiny project on three DSB 2018 images (tests/data, imported at test
time), an untrained tiny CondInst as M1 (as tests/test_export.py does), exported through the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model_config
from test_export import gt_answers
from typer.testing import CliRunner

from apis.cli import app
from apis.config import RunConfig, dump_config
from apis.data.coco import load_coco
from apis.data.importers import import_dataset
from apis.data.mask_shapes import MaskCut, own_pixels
from apis.data.records import decode_segmentation
from apis.models.condinst import CondInst
from apis.store import PointAnswer, Store
from apis.train import save_model

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
DSB = Path(__file__).parent / "data" / "dsb2018" / "stage1_train"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[int, list]]:
    """A project whose train split is three DSB images, M1 saved, two answered points per nucleus."""
    root = tmp_path_factory.mktemp("formats")
    imported = import_dataset(DSB, root / "data", "mask-folders", category="nucleus", val_fraction=0.0,
                              max_images=3)
    train = load_coco(imported.paths["train"])
    project = root / "project"
    project.mkdir()
    cfg = RunConfig()
    cfg.data.train = str(imported.paths["train"].resolve())
    cfg.device = "cpu"
    dump_config(cfg, project / "config.yaml")
    torch.manual_seed(0)
    (project / "models" / "step1").mkdir(parents=True)
    save_model(CondInst(tiny_model_config(num_classes=1, size=64)), project / "models" / "step1" / "model_final.pt")
    answers = gt_answers(train, per_instance=2)
    with Store.open(project / "apis.sqlite") as store:
        store.add_instances(train, "train")
        store.add_points([PointAnswer(i, x, y, lab, 0, "random") for i, pts in answers.items() for x, y, lab in pts])
    return project, answers


def export(project: Path, out: Path, *extra: str) -> tuple[int, str]:
    """Exit code and output (with the console's line wrapping undone) of ``apis export masks``."""
    r = runner.invoke(app, ["export", "masks", str(project), "--step", "1", "--out", str(out), "--refine", "none",
                            *extra])
    return r.exit_code, " ".join(r.output.split())


def test_label_images_from_the_command_line_import_back_as_exported(project, tmp_path):
    project, answers = project
    out = tmp_path / "labels"
    code, output = export(project, out, "--format", "label-images", "--review", "2")
    assert code == 0, output
    assert f"{out} (label-images): 3 images" in output and "objects.csv" in output and "overlaps:" in output
    assert (out / "review.json").is_file() and len(json.loads((out / "review.json").read_text())) == 2
    with open(out / "objects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["annotation_id"]) for r in rows) == sorted(answers)  # one row per pool object
    assert all(int(r["points_answered"]) == len(answers[int(r["annotation_id"])]) for r in rows)
    assert {r["apis_source"] for r in rows} <= {"prediction_set", "detection", "missing"}
    # The untrained model leaves some nuclei without a mask and lets two masks overlap: both paths are taken.
    missing = [r for r in rows if r["missing"] == "yes"]
    assert missing and all(r["label_value"] == "" for r in missing) and f"{len(missing)} objects have no mask" in output
    assert any(int(r["reassigned_pixels"]) for r in rows)

    # The same export as a COCO folder: apis data check accepts it, and its masks, one owner per pixel, are
    # what the label images import back as.
    code, output = export(project, tmp_path / "coco", "--format", "coco")
    assert code == 0, output
    r = runner.invoke(app, ["data", "check", str(tmp_path / "coco" / "annotations.json")])
    assert r.exit_code == 0, r.output
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    back = json.loads(import_dataset(out, tmp_path / "back", "label-images", val_fraction=0.0)
                      .paths["train"].read_text())
    reassigned = {int(r["annotation_id"]): int(r["reassigned_pixels"]) for r in rows}
    for im in coco["images"]:
        h, w = im["height"], im["width"]
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        cuts = [None if "segmentation" not in a else MaskCut.of(decode_segmentation(a["segmentation"], h, w))
                for a in anns]
        owner, lost = own_pixels(cuts, [a["apis_score"] for a in anns], (h, w))
        assert {a["id"]: d for a, d in zip(anns, lost, strict=True)} == {a["id"]: reassigned[a["id"]] for a in anns}
        back_im = next(b for b in back["images"] if Path(b["file_name"]).stem == Path(im["file_name"]).stem)
        label = np.zeros((h, w), np.int64)
        for b in (b for b in back["annotations"] if b["image_id"] == back_im["id"]):
            mask = decode_segmentation(b["segmentation"], h, w).astype(bool)
            owners = np.unique(owner[mask])
            assert len(owners) == 1 and owners[0] > 0  # each imported object is one exported object's pixels
            label[mask] = owners[0]
        assert (label == owner).all()  # pixel-exact


def test_bad_format_or_folder_is_one_line_before_the_model_runs(project, tmp_path):
    project, _ = project
    code, output = export(project, tmp_path / "masks.json", "--format", "yolo")
    assert code == 2 and "writes a folder, not a json file. Fix: pass --out a folder" in output
    code, output = export(project, tmp_path / "out", "--format", "cvat")
    assert code == 2 and "choose a format of coco, label-images, mask-folders, yolo" in output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "photo.png").write_bytes(b"not an export")
    code, output = export(project, mine, "--format", "mask-folders", "--force")
    assert code == 2 and "never replaced" in output and "Traceback" not in output
    assert [p.name for p in mine.iterdir()] == ["photo.png"]


def test_yolo_and_mask_folders_replace_an_earlier_export_only_with_force(project, tmp_path):
    project, answers = project
    out = tmp_path / "yolo"
    assert export(project, out, "--format", "yolo")[0] == 0
    lines = sum(len(p.read_text().splitlines()) for p in (out / "labels" / "train").iterdir())
    with open(out / "objects.csv", newline="") as f:
        assert lines == sum(1 for r in csv.DictReader(f) if r["yolo_line"])
    code, output = export(project, out, "--format", "mask-folders")
    assert code == 2 and "--force to replace it" in output
    code, output = export(project, out, "--format", "mask-folders", "--force")
    assert code == 0, output
    assert not (out / "data.yaml").exists() and len([p for p in out.iterdir() if p.is_dir()]) == 3
    back = import_dataset(out, tmp_path / "back", "mask-folders", val_fraction=0.0)
    assert back.instances["train"] <= len(answers)
