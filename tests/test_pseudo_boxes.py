"""Box-free APIS: pseudo boxes from a detector, matched one-to-one to GT instances by IoU, answered from
the matched GT masks; misses and false positives counted; the file is ordinary COCO for the loop."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model_config
from pycocotools.coco import COCO
from typer.testing import CliRunner

from apis.cli import app
from apis.config import load_config, preset
from apis.data.coco import load_coco
from apis.data.records import CocoDataset
from apis.geometry import omega
from apis.loop import ActiveRun, mask_oracle
from apis.models.condinst import CondInst
from apis.oracle import MaskOracle, Query
from apis.pseudo_boxes import (
    PseudoBoxError,
    box_iou,
    match_by_iou,
    pseudo_box_dataset,
    write_pseudo_boxes,
)
from apis.store import Store
from apis.train import Schedule, save_model

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class FakeDetector(torch.nn.Module):
    """Returns hand-made detections: ``per_image[image_id]`` = list of (xyxy box, 0-based label, score).
    It recognises an image by its position in the dataset (the detector is called in dataset order)."""

    def __init__(self, dataset: CocoDataset, per_image: dict[int, list], num_classes: int | None = None):
        super().__init__()
        self.order = [im.id for im in dataset.images]
        self.per_image = per_image
        self.seen = 0
        if num_classes is not None:
            self.cfg = dataclasses.make_dataclass("Cfg", ["num_classes"])(num_classes)

    def forward(self, images):
        out = []
        for _ in images:
            dets = self.per_image.get(self.order[self.seen], [])
            self.seen += 1
            out.append({"boxes": torch.tensor([d[0] for d in dets], dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor([d[1] for d in dets], dtype=torch.long),
                        "scores": torch.tensor([d[2] for d in dets], dtype=torch.float32)})
        return out


def _label(ds: CocoDataset, category_id: int) -> int:
    return [c.id for c in ds.categories].index(category_id)


def _other_label(ds: CocoDataset, category_id: int) -> int:
    return (_label(ds, category_id) + 1) % len(ds.categories)


def _shifted(box, dx: float) -> list[float]:
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


def _image_with(ds: CocoDataset, n: int):
    return next(im for im in ds.images if len(im.pool) >= n)


# --------------------------------------------------------------------------------------------- matching
def test_matching_is_one_to_one_greedy_by_score_and_respects_the_threshold() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], dtype=float)
    # Two detections on GT 0: the more confident one takes it; the other may not take it again.
    det = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10]], dtype=float)
    m, ious = match_by_iou(det, np.array([0.5, 0.9, 0.7]), gt, 0.5)
    assert m == [None, 0, 1]
    assert ious[1] == pytest.approx(90 / 110) and ious[0] == 0.0 and ious[2] == 1.0
    # The threshold: IoU exactly 0.5 matches, just below does not.
    half = np.array([[0, 0, 10, 5]], dtype=float)  # inside GT 0, half its area: IoU 0.5
    assert box_iou(half, gt[:1])[0, 0] == pytest.approx(0.5)
    assert match_by_iou(half, np.array([1.0]), gt, 0.5)[0] == [0]
    assert match_by_iou(half, np.array([1.0]), gt, 0.51)[0] == [None]
    # A detection overlapping two GT boxes takes the one it overlaps most, if it is free.
    both = np.array([[4, 0, 24, 10], [8, 0, 28, 10]], dtype=float)  # IoU with GT 1: 4/26, 8/22
    assert match_by_iou(both, np.array([0.9, 0.8]), gt, 0.1)[0] == [0, 1]
    assert match_by_iou(np.zeros((0, 4)), np.zeros(0), gt, 0.5) == ([], [])
    assert match_by_iou(det, np.array([0.5, 0.9, 0.7]), np.zeros((0, 4)), 0.5)[0] == [None] * 3


# ------------------------------------------------------------------------------------- the pool file
def _hand_made(ds: CocoDataset) -> tuple[dict, dict]:
    """Detections on one image with three GT instances: a shifted box with another label on g0, the exact
    box of g1, a false positive, and a box on g2 scored below the threshold (so g2 is missed)."""
    im = _image_with(ds, 3)
    g0, g1, g2 = im.pool[:3]
    dets = {im.id: [
        (_shifted(g0.box, 1.0), _other_label(ds, g0.category_id), 0.6),
        (list(g1.box), _label(ds, g1.category_id), 0.95),
        ([0.0, 0.0, 3.0, 3.0], 0, 0.8),  # the corner: overlaps no GT box enough
        (list(g2.box), _label(ds, g2.category_id), 0.1),
    ]}
    return dets, {"image": im, "g0": g0, "g1": g1, "g2": g2}


def test_pool_holds_matched_boxes_with_gt_masks_and_counts_misses(small_train, tmp_path) -> None:
    dets, k = _hand_made(small_train)
    im, g0, g1 = k["image"], k["g0"], k["g1"]
    # The corner box must really be a false positive on this image.
    assert box_iou(np.array([[0, 0, 3, 3]]), np.array([a.box for a in im.pool])).max() < 0.5
    r = pseudo_box_dataset(FakeDetector(small_train, dets), small_train, score_threshold=0.3, match_iou=0.5)
    assert r.simulated and r.detections == 3 and r.matched == 2 and r.false_positives == 1
    assert r.wrong_category == 1
    gt_all = small_train.instances()
    assert r.gt_instances == len(gt_all) and r.missed == len(gt_all) - 2
    assert set(r.missed_gt_ids) == {a.id for a in gt_all} - {g0.id, g1.id}
    assert r.recall == pytest.approx(2 / len(gt_all))
    # Per category: GT counts by the GT's category, the false positive by the detection's.
    pc = r.per_category
    assert sum(c.gt for c in pc.values()) == len(gt_all) and sum(c.matched for c in pc.values()) == 2
    assert pc[small_train.categories[0].id].false_positives == 1
    assert pc[g0.category_id].wrong_category == 1
    assert sum(c.missed for c in pc.values()) == r.missed

    anns = r.coco["annotations"]
    assert [a["apis_gt_id"] for a in anns] == [g1.id, g0.id]  # best score first
    assert [a["id"] for a in anns] == [1, 2]
    by_gt = {a["apis_gt_id"]: a for a in anns}
    assert by_gt[g1.id]["bbox"] == pytest.approx([g1.box[0], g1.box[1], g1.box[2] - g1.box[0], g1.box[3] - g1.box[1]])
    assert by_gt[g0.id]["bbox"][0] == pytest.approx(g0.box[0] + 1.0)  # the detector's box, not the GT's
    assert by_gt[g0.id]["category_id"] != g0.category_id  # the detection's category
    assert by_gt[g0.id]["segmentation"] == g0.segmentation and by_gt[g1.id]["segmentation"] == g1.segmentation

    out = write_pseudo_boxes(r, tmp_path / "pool" / "pseudo.json")
    pool = load_coco(out)  # validates the file and finds the images from the new folder
    assert [i.id for i in pool.images] == [i.id for i in small_train.images]
    assert pool.image_path(pool.images[0]).resolve() == small_train.image_path(small_train.images[0]).resolve()
    coco = COCO(str(out))
    assert len(coco.getAnnIds()) == 2
    info = json.loads(out.read_text())["info"]
    assert info["apis_pseudo_boxes"]["missed"] == r.missed and info["apis_missed_gt_ids"] == r.missed_gt_ids


def test_oracle_answers_a_pseudo_box_from_its_matched_gt_mask(small_train, tmp_path) -> None:
    dets, k = _hand_made(small_train)
    im, g0 = k["image"], k["g0"]
    r = pseudo_box_dataset(FakeDetector(small_train, dets), small_train, score_threshold=0.3)
    pool = load_coco(write_pseudo_boxes(r, tmp_path / "pseudo.json"))
    pseudo = next(a for a in pool.instances() if r.coco["annotations"][a.id - 1]["apis_gt_id"] == g0.id)
    gt_mask = g0.mask(im.height, im.width)
    win = omega(pseudo.box, im.width, im.height)  # the shifted box: Ω differs from g0's
    queries = [Query(pseudo.id, im.id, x, y) for y in range(win.y0, win.y1) for x in range(win.x0, win.x1)]
    answers = MaskOracle(pool).answer(queries)
    assert answers == [int(gt_mask[q.y, q.x]) for q in queries]
    assert 0 < sum(answers) < len(answers)  # both answers occur, so the check has teeth


def test_crowd_passes_through_and_real_use_matches_nothing(small_synthetic, small_train, tmp_path) -> None:
    data = json.loads(Path(small_synthetic["train"]).read_text())
    im = _image_with(small_train, 3)
    crowd_id = im.pool[0].id
    next(a for a in data["annotations"] if a["id"] == crowd_id)["iscrowd"] = 1
    (tmp_path / "crowd.json").write_text(json.dumps(data))
    ds = load_coco(tmp_path / "crowd.json", image_root=small_train.image_root)
    dets = {im.id: [(list(im.pool[0].box), 0, 0.9), (list(im.pool[1].box), 0, 0.9)]}
    r = pseudo_box_dataset(FakeDetector(ds, dets), ds)
    assert r.matched == 1 and r.false_positives == 1  # a box on a crowd region is not a pool instance
    crowd = [a for a in r.coco["annotations"] if a["iscrowd"]]
    assert [a["apis_gt_id"] for a in crowd] == [crowd_id] and crowd[0]["segmentation"] is not None
    assert crowd_id not in r.missed_gt_ids
    assert len(load_coco(write_pseudo_boxes(r, tmp_path / "o.json")).images) == len(ds.images)

    # Real box-free use: no masks anywhere, so every detection is in the pool, unmatched, without a mask.
    for a in data["annotations"]:
        a.pop("segmentation", None)
    data["annotations"] = [a for a in data["annotations"] if not a.get("iscrowd")]
    (tmp_path / "boxes.json").write_text(json.dumps(data))
    boxes_only = load_coco(tmp_path / "boxes.json", image_root=small_train.image_root)
    r = pseudo_box_dataset(FakeDetector(boxes_only, dets), boxes_only)
    assert not r.simulated and r.pool_size == 2 and r.matched == 0 and r.missed == 0 and r.recall is None
    assert all("segmentation" not in a and "apis_gt_id" not in a for a in r.coco["annotations"])

    # Some masks and some not: refused, naming the file and the fix.
    data = json.loads(Path(small_synthetic["train"]).read_text())
    data["annotations"][0].pop("segmentation")
    (tmp_path / "mixed.json").write_text(json.dumps(data))
    mixed = load_coco(tmp_path / "mixed.json", image_root=small_train.image_root)
    with pytest.raises(PseudoBoxError, match="mixed.json.*have no segmentation"):
        pseudo_box_dataset(FakeDetector(mixed, dets), mixed)


def test_detector_with_other_classes_is_refused(small_train) -> None:
    with pytest.raises(PseudoBoxError, match="predicts 3 classes but the file has 6"):
        pseudo_box_dataset(FakeDetector(small_train, {}, num_classes=3), small_train)


# ------------------------------------------------------------------------- a real model, the CLI, the loop
def test_cli_with_a_condinst_checkpoint_writes_a_valid_pool(small_synthetic, small_train, tmp_path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "detector.pt"
    # Untrained, its scores sit near the focal-loss prior (0.01): let every detection through.
    save_model(CondInst(dataclasses.replace(tiny_model_config(), score_thresh=0.0)), ckpt)
    out = tmp_path / "out" / "pseudo.json"
    res = CliRunner().invoke(app, ["data", "pseudo-boxes", "--detector", str(ckpt), "--images",
                                   str(small_synthetic["train"]), "--out", str(out), "--score", "0.0",
                                   "--iou", "0.2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "matched" in res.output and "false positives" in res.output
    pool = load_coco(out)
    stats = json.loads(out.read_text())["info"]["apis_pseudo_boxes"]
    assert stats["detections"] > 0 and stats["matched"] > 0  # 100 boxes per image: some overlap the GT
    assert stats["matched"] + stats["false_positives"] == stats["detections"]
    assert stats["matched"] + stats["missed"] == stats["gt_instances"] == len(small_train.instances())
    assert len(pool.instances()) == stats["matched"]


def test_box_free_config_ships_and_names_the_pseudo_box_pool() -> None:
    path = CONFIGS / "box_free.yaml"
    text = path.read_text()
    cfg = load_config(path)
    assert cfg.data.train and cfg.data.val
    assert "apis data pseudo-boxes" in text and Path(cfg.data.train).name in text.split("pseudo-boxes", 1)[1]


@pytest.mark.slow
def test_loop_on_pseudo_boxes_asks_the_matched_gt_masks(small_train, small_val, tmp_path) -> None:
    # Every GT instance detected with a jittered box (and one false positive per image, dropped).
    dets = {im.id: [(_shifted(a.box, 0.7 if i % 2 else -0.4), _label(small_train, a.category_id), 0.9 - 0.1 * i)
                    for i, a in enumerate(im.pool)] + [([0.0, 0.0, 2.0, 2.0], 0, 0.5)]
            for im in small_train.images}
    r = pseudo_box_dataset(FakeDetector(small_train, dets), small_train, score_threshold=0.3)
    assert r.matched > 0
    pool = load_coco(write_pseudo_boxes(r, tmp_path / "pseudo.json"))
    gt_of = {a["id"]: a["apis_gt_id"] for a in r.coco["annotations"]}

    cfg = preset("tiny")
    sched = Schedule(iterations=2, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=2, log_every=1)
    cfg = dataclasses.replace(cfg, model=tiny_model_config(), initial=sched, finetune=sched, device="cpu",
                              eval_batch_size=4, loop=dataclasses.replace(cfg.loop, steps=1))
    oracle, gt = mask_oracle(pool)
    root = tmp_path / "run"
    ActiveRun(root, cfg, pool, small_val, "entropy", 0, oracle, gt, report=lambda m: None).run()

    gt_masks = {a.id: a.mask(im.height, im.width) for im in small_train.images for a in im.pool}
    with Store.open(root / "apis.sqlite") as store:
        stored = {i.id: i for i in store.instances("train")}
        points = store.points()
    assert set(stored) == set(gt_of)  # the pool is the matched pseudo boxes, with their new ids
    assert {p.step for ps in points.values() for p in ps} == {0, 1}
    n = 0
    for inst_id, ps in points.items():
        for p in ps:
            assert p.label == gt_masks[gt_of[inst_id]][p.y, p.x], "answered from the matched GT mask"
            w = stored[inst_id].omega
            assert w.x0 <= p.x < w.x1 and w.y0 <= p.y < w.y1, "asked inside the pseudo box"
            n += 1
    assert n == 2 * len(gt_of)
