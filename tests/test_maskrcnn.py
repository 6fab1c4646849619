"""Mask R-CNN with point supervision: the box frame that the point loss, the mask reading and the
prediction sets share, the per-instance mask losses, prediction sets of one map per positive
proposal, the evaluation contract, overfitting two images, and one step of the active loop."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import tiny_model_config

from apis.config import load_config, preset
from apis.data.loader import category_index, image_tensor, make_target
from apis.geometry import PixelWindow, omega
from apis.models import build_model
from apis.models.condinst import STAT_PREFIX, CondInst
from apis.models.maskrcnn import MASK_SIZE, MaskRCNN, mask_losses, read_masks, to_box_frame
from apis.models.transform import batch_images
from apis.train import Schedule, load_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 48, 80  # a non-square image, not a multiple of 32


def _config(num_classes: int = 3, size: int = 64, **kw):
    return dataclasses.replace(tiny_model_config(num_classes, size), architecture="maskrcnn", **kw)


@pytest.fixture(scope="module")
def model() -> MaskRCNN:
    torch.manual_seed(0)
    return build_model(_config())


def _bce(logit: float, label: int) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1.0 - p))


# ------------------------------------------------------------------------------------ box frame
def test_a_point_maps_into_the_proposal_mask_frame() -> None:
    """A 28×28 mask over a box 56 px wide and 28 px tall: 2 px per cell in x, 1 in y."""
    boxes = torch.tensor([[10.0, 20.0, 66.0, 48.0]])
    pts = torch.tensor([[[10.0, 20.0], [11.0, 20.5], [66.0, 48.0], [38.0, 34.0], [9.9, 30.0]]])
    rel = to_box_frame(pts, boxes)
    expected = torch.tensor([[[0.0, 0.0], [0.5, 0.5], [28.0, 28.0], [14.0, 14.0], [-0.05, 10.0]]])
    torch.testing.assert_close(rel, expected)


def test_point_loss_reads_the_right_logits_of_each_proposal() -> None:
    """Proposal 0 equals the GT box (28 px: one cell per input pixel); proposal 1 covers only its right
    half. Points are read at their pixel centres in each proposal's frame; points outside a proposal
    are ignored for it; padding never counts."""
    g = torch.Generator().manual_seed(0)
    z = (torch.rand(2, MASK_SIZE, MASK_SIZE, generator=g) * 6 - 3).requires_grad_(True)
    box = [8.0, 4.0, 36.0, 32.0]
    proposals = torch.tensor([box, [22.0, 4.0, 36.0, 32.0]])
    # Input frame = original frame (scale 1). Pixel (13, 9) has its centre at (13.5, 9.5) → cell (5.5, 5.5):
    # exactly the centre of column 5, row 5. Pixel (30, 20) → (22.5, 16.5) in proposal 0 and, in proposal 1
    # (14 px over 28 cells, 2 cells per pixel), (17, 16.5): halfway between columns 16 and 17 of row 16.
    centres = torch.tensor([[[13.5, 9.5], [30.5, 20.5], [0.5, 0.5]]])
    target = {"point_centres": centres, "point_labels": torch.tensor([[1, 0, -1]]), "scale": (1.0, 1.0)}
    losses = mask_losses([z], [proposals], [torch.tensor([0, 0])], [target], point_stats=True)
    z0, z1 = z[0].detach(), z[1].detach()
    read = [(float(z0[5, 5]), 1), (float(z0[16, 22]), 0),  # proposal 0 holds both points
            (0.5 * float(z1[16, 16] + z1[16, 17]), 0)]  # proposal 1 holds only the second
    expected = sum(_bce(v, y) for v, y in read) / 3
    assert float(losses["loss_point"].detach()) == pytest.approx(expected, rel=1e-6)
    assert float(losses["loss_mask"].detach()) == 0.0
    losses["loss_point"].backward()
    # 5.5 / 28 is not a binary fraction: neighbours of an exact cell centre get weights of about 1e-7.
    touched = {tuple(ix) for ix in torch.nonzero(z.grad.abs() > 1e-5).tolist()}
    assert touched == {(0, 5, 5), (0, 16, 22), (1, 16, 16), (1, 16, 17)}
    # Statistics: the mean over both proposals at a point, 0 from a proposal that does not hold it.
    p0 = 1 / (1 + math.exp(-read[0][0])) / 2
    p1 = (1 / (1 + math.exp(-read[1][0])) + 1 / (1 + math.exp(-read[2][0]))) / 2
    assert float(losses[f"{STAT_PREFIX}points_random"]) == 2
    assert float(losses[f"{STAT_PREFIX}right_random"]) == (p0 > 0.5) + (p1 <= 0.5)


def test_full_mask_instances_use_the_mask_and_ignore_their_points() -> None:
    """A GT mask filling the proposal box gives all-ones cell targets: BCE(z, 1) averaged over cells."""
    z = torch.randn(1, MASK_SIZE, MASK_SIZE, requires_grad=True)
    masks = torch.zeros(1, 40, 40, dtype=torch.uint8)
    masks[0, 4:32, 8:36] = 1
    target = {"has_mask": torch.tensor([True]), "masks": masks, "scale": (2.0, 2.0),
              "point_centres": torch.tensor([[[30.0, 20.0]]]), "point_labels": torch.tensor([[0]])}
    proposal = torch.tensor([[16.0, 8.0, 72.0, 64.0]])  # the box (8, 4, 36, 32) in an input frame twice as large
    losses = mask_losses([z], [proposal], [torch.tensor([0])], [target])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(z.detach(), torch.ones_like(z))
    assert float(losses["loss_mask"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(losses["loss_point"].detach()) == 0.0


def test_masks_are_read_at_original_pixel_centres_through_the_box_frame() -> None:
    """A proposal 28 original pixels wide: pixel (x, y) of the box reads cell (x − x0, y − y0) exactly,
    whatever the input scale; pixels whose centres lie outside the box are 0."""
    z = torch.randn(1, MASK_SIZE, MASK_SIZE)
    win = PixelWindow(6, 8, 40, 40)
    for s in (1.0, 2.0, 0.5):
        box = torch.tensor([[10.0, 10.0, 38.0, 38.0]]) * s
        p = read_masks(z, box, win, (s, s))[0]
        assert p.shape == (win.height, win.width)
        torch.testing.assert_close(p[10 - 8:38 - 8, 10 - 6:38 - 6], torch.sigmoid(z[0]), rtol=1e-5, atol=1e-6)
        inside = torch.zeros(win.height, win.width, dtype=torch.bool)
        inside[10 - 8:38 - 8, 10 - 6:38 - 6] = True
        assert float(p[~inside].abs().max()) == 0.0


# ------------------------------------------------------------------------------------ training
def _target(with_masks: bool, with_points: bool) -> dict:
    t = {"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0], [30.0, 8.0, 70.0, 44.0]]), "labels": torch.tensor([0, 2])}
    if with_masks:
        masks = torch.zeros(2, H, W, dtype=torch.uint8)
        masks[0, 8:36, 8:36] = 1
        masks[1, 12:40, 34:66] = 1
        t["masks"], t["has_mask"] = masks, torch.tensor([True, True])
    if with_points:
        t["points"] = torch.tensor([[[20, 20], [5, 5]], [[50, 30], [0, 0]]])
        t["point_labels"] = torch.tensor([[1, 0], [1, -1]])
    return t


LOSS_KEYS = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask", "loss_point"}


def test_training_returns_finite_losses_and_the_point_loss_reaches_the_mask_head(model: MaskRCNN) -> None:
    torch.manual_seed(3)
    model.train()
    model.zero_grad()
    losses = model([torch.rand(3, H, W), torch.rand(3, H, W)], [_target(False, True), _target(False, True)])
    assert set(losses) == LOSS_KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_point"].detach()) > 0 and float(losses["loss_mask"].detach()) == 0
    losses["loss_point"].backward()
    heads = model.roi_heads
    assert heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0
    assert heads.mask_head[0][0].weight.grad.abs().sum() > 0
    assert model.backbone.fpn.layer_blocks[0][0].weight.grad.abs().sum() > 0  # P2 feeds the mask RoIs


def test_mask_and_box_only_supervision(model: MaskRCNN) -> None:
    model.train()
    image = [torch.rand(3, H, W)]
    masks = model(image, [_target(True, True)])  # a full mask makes the instance's points redundant
    assert float(masks["loss_mask"].detach()) > 0 and float(masks["loss_point"].detach()) == 0
    boxes = model(image, [_target(False, False)])
    assert set(boxes) == LOSS_KEYS
    assert float(boxes["loss_mask"].detach()) == 0 and float(boxes["loss_point"].detach()) == 0
    assert float(boxes["loss_classifier"].detach()) > 0
    stats = model(image, [_target(False, True)], point_stats=True)
    assert float(stats[f"{STAT_PREFIX}points_random"]) == 3  # the points of both instances, padding left out
    with pytest.raises(ValueError, match="targets"):
        model(image)


def test_weights_scale_the_mask_losses(model: MaskRCNN, monkeypatch) -> None:
    model.train()
    torch.manual_seed(5)
    base = model([torch.rand(3, H, W)], [_target(False, True)])["loss_point"].detach()
    monkeypatch.setattr(model.cfg, "point_loss_weight", 0.1)
    torch.manual_seed(5)
    assert float(model([torch.rand(3, H, W)], [_target(False, True)])["loss_point"].detach()) == pytest.approx(
        0.1 * float(base), rel=1e-5)


def test_boxinst_losses_are_refused() -> None:
    with pytest.raises(ValueError, match="condinst"):
        MaskRCNN(_config(box_projection_weight=1.0))


# ------------------------------------------------------------------------------- prediction sets
def _expected_positives(model: MaskRCNN, image: torch.Tensor, target: dict) -> list[int]:
    """Per GT: RPN test proposals plus the GT boxes whose best-overlapping GT it is, with IoU ≥ 0.5."""
    from torchvision.models.detection.image_list import ImageList
    from torchvision.ops import box_iou

    model.eval()
    with torch.no_grad():
        batch = batch_images([image], model.cfg.test_min_size, model.cfg.max_size)
        feats = model.backbone(batch.tensors)
        proposals, _ = model.rpn(ImageList(batch.tensors, batch.sizes), feats)
    sx, sy = batch.scales[0]
    gt = target["boxes"] * torch.tensor([sx, sy, sx, sy])
    iou = box_iou(torch.cat([proposals[0], gt]), gt)
    best, which = iou.max(1)
    return [min(int(((which == g) & (best >= 0.5)).sum()), model.cfg.topk_per_instance) for g in range(len(gt))]


def _ps_target() -> dict:
    return {"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0], [30.0, 8.0, 70.0, 44.0], [5.0, 30.0, 9.0, 33.0]]),
            "labels": torch.tensor([0, 2, 1])}


def test_prediction_sets_hold_one_map_per_positive_proposal_over_omega(model: MaskRCNN) -> None:
    torch.manual_seed(1)
    image, target = torch.rand(3, H, W), _ps_target()
    model.train()
    ks = _expected_positives(model, image, target)
    model.train()
    sets = model.prediction_sets([image], [target])
    assert model.training  # the mode is restored
    assert len(sets) == 1 and len(sets[0]) == 3
    assert all(k >= 1 for k in ks) and max(ks) > 1  # the GT box itself is always positive
    for g, maps in enumerate(sets[0]):
        win = omega(tuple(target["boxes"][g].tolist()), W, H)
        assert maps.shape == (ks[g], win.height, win.width), g
        assert maps.dtype == torch.float32 and maps.device.type == "cpu"
        assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    whole = model.prediction_sets([image], [target], crop_first=False)[0]
    assert all(torch.equal(a, b) for a, b in zip(sets[0], whole, strict=True))


def test_prediction_sets_are_capped_and_take_given_windows(model: MaskRCNN, monkeypatch) -> None:
    torch.manual_seed(2)
    image, target = torch.rand(3, H, W), _ps_target()
    uncapped = _expected_positives(model, image, target)
    assert max(uncapped) > 2
    monkeypatch.setattr(model.cfg, "topk_per_instance", 2)
    windows = [PixelWindow(0, 0, W, H), PixelWindow(30, 10, 31, 12), PixelWindow(4, 29, 10, 34)]
    sets = model.prediction_sets([image], [dict(target, windows=windows)])[0]
    for g, maps in enumerate(sets):
        assert maps.shape == (min(uncapped[g], 2), windows[g].height, windows[g].width)
    crop = model.prediction_sets([image], [target])[0][0]
    win = omega(tuple(target["boxes"][0].tolist()), W, H)
    torch.testing.assert_close(sets[0][:, win.y0:win.y1, win.x0:win.x1], crop, rtol=0, atol=1e-6)
    # The whole-image map is zero outside the first map's proposal, the GT box itself.
    outside = torch.ones(H, W, dtype=torch.bool)
    outside[win.y0:win.y1, win.x0:win.x1] = False
    assert float(sets[0][0][outside].max()) == 0.0


# ------------------------------------------------------------------------------------ evaluation
def test_evaluation_returns_detections_at_the_original_size(model: MaskRCNN, monkeypatch) -> None:
    monkeypatch.setattr(model.cfg, "score_thresh", 0.0)
    monkeypatch.setattr(model.cfg, "detections_per_image", 20)
    torch.manual_seed(4)
    sizes = [(50, 70), (45, 37)]
    model.eval()
    with torch.no_grad():
        results = model([torch.rand(3, h, w) for h, w in sizes])
    assert len(results) == 2
    for (h, w), r in zip(sizes, results, strict=True):
        assert set(r) == {"boxes", "labels", "scores", "masks"}
        n = r["boxes"].shape[0]
        assert 0 < n <= 20
        assert r["masks"].shape == (n, 1, h, w) and r["scores"].shape == (n,)
        assert float(r["masks"].min()) >= 0 and float(r["masks"].max()) <= 1
        assert r["labels"].dtype == torch.long and bool(((r["labels"] >= 0) & (r["labels"] < 3)).all())
        assert bool((r["scores"][:-1] >= r["scores"][1:]).all())
        b = r["boxes"]
        assert bool((b[:, 0] >= 0).all() and (b[:, 2] <= w + 1e-4).all() and (b[:, 3] <= h + 1e-4).all())
        for box, mask in zip(b, r["masks"][:, 0], strict=True):  # a mask stays inside its box
            win = omega(tuple(box.tolist()), w, h)
            outside = torch.ones(h, w, dtype=torch.bool)
            outside[win.y0:win.y1, win.x0:win.x1] = False
            assert float(mask[outside].abs().sum()) == 0.0


def test_checkpoint_round_trip_keeps_the_architecture(model: MaskRCNN, tmp_path) -> None:
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert isinstance(loaded, MaskRCNN) and loaded.cfg.rcnn == model.cfg.rcnn
    assert isinstance(build_model(tiny_model_config()), CondInst)
    with pytest.raises(ValueError, match="architecture"):
        build_model(dataclasses.replace(tiny_model_config(), architecture="yolo"))


def test_the_shipped_config_selects_mask_rcnn() -> None:
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "configs" / "maskrcnn.yaml")
    assert cfg.model.architecture == "maskrcnn" and cfg.preset == "tiny"
    assert cfg.model.rcnn.anchor_sizes == (16, 32, 64, 128, 256)


# ---------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_tiny_mask_rcnn_overfits_two_images_from_points(tmp_path) -> None:
    """Two 64 px images, 25 random points per instance, 80 iterations (about 25 s on one thread)."""
    from apis.data.coco import load_coco
    from apis.data.loader import TrainingSet
    from apis.data.synthetic import SyntheticConfig, generate
    from apis.evaluate import evaluate
    from apis.models.backbone import BackboneConfig
    from apis.models.condinst import RCNNConfig
    from apis.oracle import MaskOracle, initial_answers
    from apis.train import train

    paths = generate(tmp_path / "data", SyntheticConfig(seed=11, image_size=64, train_images=2, val_images=1,
                                                        max_instances=2))
    ds = load_coco(paths["train"])
    points: dict[int, list[tuple[int, int, int]]] = {}
    for a in initial_answers(ds, MaskOracle(ds), seed=0, k=25):
        points.setdefault(a.instance_id, []).append((a.x, a.y, a.label))
    cfg = _config(len(ds.categories), 64, backbone=BackboneConfig("efficientnet_lite0", pretrained=True),
                  fpn_channels=32, rcnn=RCNNConfig(roi_batch_size=64, box_head_dim=128, mask_head_channels=32,
                                                   mask_head_convs=2))
    torch.manual_seed(0)
    model = build_model(cfg)
    schedule = Schedule(iterations=80, batch_size=2, optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_iters=10,
                        checkpoint_every=1000, log_every=1000)
    train(model, TrainingSet(ds, points=points), schedule, tmp_path / "run", seed=0)

    # The first map of each set is the GT box's own proposal, which covers all of Ω: it must give every
    # labelled point its answer. (The set's mean is lower at points that some proposals do not cover.)
    classes = category_index(ds)
    right = total = 0
    for im in ds.images:
        sets = model.prediction_sets([image_tensor(ds, im)], [make_target(im, classes)])[0]
        for inst, probs in zip(im.pool, sets, strict=True):
            win = omega(inst.box, im.width, im.height)
            for x, y, label in points[inst.id]:
                right += bool(probs[0, y - win.y0, x - win.x0] > 0.5) == bool(label)
                total += 1
    assert right / total >= 0.95, f"point accuracy {right / total:.3f}"
    ap = evaluate(model, ds, batch_size=2).segm["AP"]
    assert ap >= 50.0, f"mask AP {ap:.1f} on the training images"


def test_one_active_step_with_mask_rcnn_and_entropy(tmp_path, small_train, small_val) -> None:
    from apis.loop import ActiveRun, mask_oracle
    from apis.store import Store

    base = preset("tiny")
    sched = Schedule(iterations=2, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=10, log_every=1)
    cfg = dataclasses.replace(base, model=_config(6, 64), initial=sched, finetune=sched, device="cpu",
                              eval_batch_size=2, loop=dataclasses.replace(base.loop, steps=1))
    oracle, gt = mask_oracle(small_train)
    run = ActiveRun(tmp_path / "run", cfg, small_train, small_val, "entropy", 0, oracle, gt, report=lambda m: None)
    results = run.run()
    assert [r.step for r in results] == [0, 1]
    assert isinstance(load_model(tmp_path / "run" / "models" / "step1" / "model_final.pt"), MaskRCNN)
    by_id = {a.id: (a, im) for im in small_train.images for a in im.pool}
    with Store.open(tmp_path / "run" / "apis.sqlite") as store:
        points = store.points()
    assert sorted(points) == sorted(by_id)
    for iid, ps in points.items():
        assert [p.step for p in ps] == [0, 1]
        inst, im = by_id[iid]
        assert omega(inst.box, im.width, im.height).contains(ps[1].x, ps[1].y)
        assert (ps[1].x, ps[1].y) != (ps[0].x, ps[0].y)
