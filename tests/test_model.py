"""CondInst with point supervision: the point loss, frames under flip and resize, label assignment,
prediction sets, and the training / evaluation contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from apis.data.transforms import hflip
from apis.geometry import PixelWindow, omega, sample_points
from apis.models.backbone import BackboneConfig
from apis.models.condinst import INF, CondInst, CondInstConfig, fcos_assign
from apis.models.losses import point_logits, point_loss
from apis.models.transform import ROW_GATHER_FACTOR, batch_images, resize_bilinear, targets_to_input_frame

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_config(**kw) -> CondInstConfig:
    return CondInstConfig(num_classes=3, backbone=BackboneConfig(pretrained=False), fpn_channels=16,
                          mask_branch_channels=16, train_min_sizes=(64,), test_min_size=64, **kw)


@pytest.fixture(scope="module")
def model() -> CondInst:
    torch.manual_seed(0)
    return CondInst(_tiny_config())


def _bce(logit: float, label: int) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1.0 - p))


# -------------------------------------------------------------------------------------- point loss
def test_point_loss_is_bce_of_bilinear_logits_at_pixel_centres() -> None:
    """A 16×16 logit map at stride 4 covering a 64×64 frame: cell (col i, row j) has its centre at
    (4i + 2, 4j + 2)."""
    g = torch.Generator().manual_seed(0)
    maps = (torch.rand(2, 16, 16, generator=g) * 6.0 - 3.0).requires_grad_(True)
    L0, L1 = maps[0].detach(), maps[1].detach()

    def v(m: torch.Tensor, row: int, col: int) -> float:
        return float(m[row, col])

    centres = torch.tensor([
        [[10.0, 6.0], [12.0, 6.0], [11.0, 7.0], [1.0, 1.0], [50.0, 50.0]],
        [[34.0, 62.0], [60.0, 20.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
    ])
    labels = torch.tensor([[1, 0, 1, 0, -1], [0, 1, -1, -1, -1]])
    expected_logits = [
        v(L0, 1, 2),  # exactly on the centre of cell (2, 1)
        0.5 * v(L0, 1, 2) + 0.5 * v(L0, 1, 3),  # halfway between two cells in x
        (0.75 * 0.75 * v(L0, 1, 2) + 0.25 * 0.75 * v(L0, 1, 3)  # (2.25, 1.25) in cell units
         + 0.75 * 0.25 * v(L0, 2, 2) + 0.25 * 0.25 * v(L0, 2, 3)),
        v(L0, 0, 0),  # before the first cell centre: the border value
        v(L1, 15, 8),  # (34, 62) → cell (8, 15)
        # (60, 20) → (14.5, 4.5) in cell units: the mean of four cells
        0.25 * (v(L1, 4, 14) + v(L1, 4, 15) + v(L1, 5, 14) + v(L1, 5, 15)),
    ]
    got = point_logits(maps, centres, (64, 64))
    valid = labels >= 0
    torch.testing.assert_close(got[valid], torch.tensor(expected_logits), rtol=1e-6, atol=1e-6)

    valid_labels = [1, 0, 1, 0, 0, 1]
    expected = sum(_bce(z, y) for z, y in zip(expected_logits, valid_labels, strict=True)) / 6
    loss = point_loss(maps, centres, labels, (64, 64))
    assert loss.dim() == 0
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)

    # Padding (label −1) contributes nothing: no gradient reaches the cell around (50, 50).
    loss.backward()
    grad = maps.grad
    assert grad[0, 12, 12] == 0 and grad[0, 11:14, 11:14].abs().sum() == 0
    touched0 = {(0, 0), (1, 2), (1, 3), (2, 2), (2, 3)}
    nonzero0 = {tuple(ix) for ix in torch.nonzero(grad[0]).tolist()}
    assert nonzero0 == touched0
    assert {tuple(ix) for ix in torch.nonzero(grad[1]).tolist()} == {(15, 8), (4, 14), (4, 15), (5, 14), (5, 15)}


def test_point_loss_without_labelled_points_is_zero_with_gradient() -> None:
    maps = torch.randn(1, 8, 8, requires_grad=True)
    loss = point_loss(maps, torch.zeros(1, 2, 2), torch.full((1, 2), -1), (32, 32))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert maps.grad is not None and maps.grad.abs().sum() == 0


def test_point_loss_changes_with_the_label() -> None:
    maps = torch.full((1, 4, 4), 2.0)
    centres = torch.tensor([[[6.0, 6.0]]])
    on = point_loss(maps, centres, torch.tensor([[1]]), (16, 16))
    off = point_loss(maps, centres, torch.tensor([[0]]), (16, 16))
    assert float(on) == pytest.approx(_bce(2.0, 1)) and float(off) == pytest.approx(_bce(2.0, 0))


# -------------------------------------------------------------------- frames under flip and resize
H0, W0 = 50, 70  # original image: non-square, short side not the model's min size


def _field(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """A smooth, left-right asymmetric function in [0, 1] of continuous original coordinates."""
    return 0.5 + 0.25 * torch.sin(xs / 9.0 + 0.3) + 0.2 * torch.cos(ys / 7.0) * (xs / W0)


def _field_image(h: int = H0, w: int = W0) -> torch.Tensor:
    """The field at the original pixel centres, as a 3×h×w image (three shifted copies)."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    f = _field(xs.float(), ys.float())
    return torch.stack([f, 1.0 - f, f * f])


def _disc_mask(h: int = H0, w: int = W0, cx: float = 30.0, cy: float = 22.0, r: float = 15.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return (((xs - cx) ** 2 + (ys - cy) ** 2) < r * r).to(torch.uint8)


def _sample_target() -> dict:
    masks = torch.stack([_disc_mask(), _disc_mask(cx=55.0, cy=30.0, r=10.0)])
    points = torch.tensor([[[30, 22], [10, 5], [44, 30], [0, 0]], [[55, 30], [69, 49], [0, 0], [0, 0]]])
    answers = torch.stack([masks[g][points[g, :, 1], points[g, :, 0]] for g in range(2)]).long()
    labels = torch.where(torch.tensor([[True, True, True, False], [True, True, False, False]]), answers, -1)
    return {
        "boxes": torch.tensor([[15.0, 7.0, 45.0, 37.0], [45.0, 20.0, 65.0, 40.0]]),
        "labels": torch.tensor([0, 2]),
        "points": points,
        "point_labels": labels,
        "masks": masks,
        "has_mask": torch.tensor([True, False]),
    }


def test_hflip_moves_points_boxes_masks_and_image_together() -> None:
    image, target = _field_image(), _sample_target()
    assert (target["point_labels"] == 1).any() and (target["point_labels"] == 0).any()
    fimage, ft = hflip(image, target)
    for g in range(2):
        for k in range(target["points"].shape[1]):
            label = int(target["point_labels"][g, k])
            x, y = target["points"][g, k].tolist()
            fx, fy = ft["points"][g, k].tolist()
            if label < 0:  # padding stays as it was
                assert (fx, fy) == (x, y)
                continue
            assert (fx, fy) == (W0 - 1 - x, y)
            # The same answer from the same (flipped) mask, and the same pixel of the image.
            assert int(ft["masks"][g, fy, fx]) == label == int(target["masks"][g, y, x])
            assert torch.equal(fimage[:, fy, fx], image[:, y, x])
            # A logit map read at the flipped point's centre gives the original value.
            read = sample_points(fimage[:1], torch.tensor([[[fx + 0.5, fy + 0.5]]]), (H0, W0))
            assert float(read) == pytest.approx(float(image[0, y, x]), abs=1e-6)
            # Ω of the flipped box holds the flipped point exactly when Ω of the box held the point.
            inside = omega(tuple(target["boxes"][g].tolist()), W0, H0).contains(x, y)
            assert omega(tuple(ft["boxes"][g].tolist()), W0, H0).contains(fx, fy) == inside
    torch.testing.assert_close(ft["boxes"][0], torch.tensor([25.0, 7.0, 55.0, 37.0]))
    # The input is not modified and flipping twice is the identity.
    assert torch.equal(target["points"], _sample_target()["points"])
    image2, t2 = hflip(fimage, ft)
    assert torch.equal(image2, image)
    for key in ("boxes", "points", "point_labels", "masks"):
        assert torch.equal(t2[key], target[key]), key


def _all_pixel_points(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1)


@pytest.mark.parametrize("flip", [False, True])
def test_resized_sample_reads_the_same_value_at_point_centres(flip: bool) -> None:
    image, target = _field_image(), _sample_target()
    pts = _all_pixel_points(H0, W0)  # every pixel of the original image as a point
    target = dict(target, points=pts[None], point_labels=torch.ones(1, pts.shape[0], dtype=torch.long),
                  boxes=target["boxes"][:1], labels=target["labels"][:1])
    orig_values = image[:, pts[:, 1], pts[:, 0]]  # 3×P: the field at the original pixel centres
    if flip:
        image, target = hflip(image, target)
    batch = batch_images([image], min_size=64, max_size=1333)
    assert batch.sizes == [(64, 90)] and batch.padded_size == (64, 96)
    sx, sy = batch.scales[0]
    assert (sx, sy) == (90 / 70, 64 / 50)  # non-integer, and different in x and y
    [moved] = targets_to_input_frame([target], batch, mask_stride=4)
    expected = (target["points"].float() + 0.5) * torch.tensor([sx, sy])
    assert torch.equal(moved["point_centres"], expected)
    torch.testing.assert_close(moved["boxes"], target["boxes"] * torch.tensor([sx, sy, sx, sy]))
    # The resized (and padded) image read at the point centres gives the value at the original centre.
    read = torch.stack([sample_points(batch.tensors[:, c], moved["point_centres"], batch.padded_size)[0]
                        for c in range(3)])
    err = (read - orig_values).abs()
    assert float(err.max()) < 0.01 and float(err.mean()) < 0.002


@pytest.mark.parametrize("flip", [False, True])
def test_resized_mask_targets_give_the_points_answers(flip: bool) -> None:
    image, target = _field_image(), _sample_target()
    mask = target["masks"][0]
    pts = _all_pixel_points(H0, W0)
    # Points clear of the boundary (≥ 4 original pixels), where a stride-4 target must agree.
    ys, xs = pts[:, 1].float() + 0.5, pts[:, 0].float() + 0.5
    dist = ((xs - 30.0) ** 2 + (ys - 22.0) ** 2).sqrt()
    clear = (dist - 15.0).abs() >= 4.0
    pts = pts[clear]
    answers = mask[pts[:, 1], pts[:, 0]].long()
    assert 0 < int(answers.sum()) < answers.numel()
    target = dict(boxes=target["boxes"][:1], labels=target["labels"][:1], masks=mask[None],
                  has_mask=torch.tensor([True]), points=pts[None], point_labels=answers[None])
    if flip:
        image, target = hflip(image, target)
        assert torch.equal(target["masks"][0][target["points"][0, :, 1], target["points"][0, :, 0]].long(),
                           answers)
    batch = batch_images([image], min_size=64, max_size=1333)
    [moved] = targets_to_input_frame([target], batch, mask_stride=4)
    assert moved["mask_targets"].shape == (1, 16, 24)
    read = sample_points(moved["mask_targets"], moved["point_centres"], batch.padded_size)[0]
    assert torch.equal((read > 0.5).long(), answers)


@pytest.mark.parametrize("size, out", [((50, 70), (16, 22)),  # rows shrink ≥ 3×: the rows are gathered
                                       ((603, 1272), (152, 320)),  # DSB's widest image at 152 px
                                       ((31, 17), (9, 40)),  # rows shrink, columns grow
                                       ((50, 70), (20, 28)),  # under 3×: F.interpolate itself
                                       ((40, 40), (64, 64))])
def test_resize_bilinear_is_f_interpolate_of_the_float_stack(size, out) -> None:
    g = torch.Generator().manual_seed(1)
    stack = (torch.rand(3, *size, generator=g) * 256).to(torch.uint8)
    for unit in (1.0, 255.0):
        expected = F.interpolate(stack[:, None].float() / unit, size=out, mode="bilinear", align_corners=False)[:, 0]
        got = resize_bilinear(stack, out, unit=unit)
        assert got.shape == (3, *out) and got.dtype == torch.float32
        if size[0] < ROW_GATHER_FACTOR * out[0]:
            assert torch.equal(got, expected)  # to the bit: runs on such images are unchanged
        else:
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6 * 255 / unit)
    assert resize_bilinear(stack[:0], out).shape == (0, *out)
    floats = stack.float()
    kept = floats.clone()
    resize_bilinear(floats, out, unit=255.0)
    assert torch.equal(floats, kept)  # a float stack (a cached target) is not divided in place


def test_mask_targets_of_a_large_image_keep_the_masks_area() -> None:
    """A 600×900 image with a disc at the tiny preset's 160 px: the gathered rows give the stride-4 target the
    disc's area scaled by the resize, and a weight stack of 255 everywhere gives weight 1 in every cell."""
    yy, xx = torch.meshgrid(torch.arange(600) + 0.5, torch.arange(900) + 0.5, indexing="ij")
    disc = (((xx - 450) ** 2 + (yy - 300) ** 2) < 150.0**2).to(torch.uint8)
    target = dict(boxes=torch.tensor([[300.0, 150.0, 600.0, 450.0]]), labels=torch.tensor([0]), masks=disc[None],
                  mask_pixel_weights=torch.full((1, 600, 900), 255, dtype=torch.uint8))
    batch = batch_images([torch.zeros(3, 600, 900)], min_size=160, max_size=320)
    [moved] = targets_to_input_frame([target], batch, mask_stride=4)
    (h, _), (sx, sy) = batch.sizes[0], batch.scales[0]
    assert 600 >= ROW_GATHER_FACTOR * h
    area = float(moved["mask_targets"].sum()) * 16  # stride-4 cells hold 16 input pixels each
    assert abs(area - float(disc.sum()) * sx * sy) < 0.01 * area
    assert torch.allclose(moved["mask_target_weights"], torch.ones_like(moved["mask_target_weights"]))


# -------------------------------------------------------------------------------- label assignment
def test_fcos_assign_hand_made_case() -> None:
    cfg = CondInstConfig(num_classes=1)
    assert cfg.strides == [8, 16, 32]
    assert cfg.scale_ranges == [(0.0, 64.0), (64.0, 128.0), (128.0, INF)]
    boxes = torch.tensor([
        [0.0, 0.0, 40.0, 40.0],  # 0: big
        [10.0, 10.0, 30.0, 30.0],  # 1: small, inside the big one
        [0.0, 100.0, 200.0, 300.0],  # 2: large (reach 100 from its centre)
        [300.0, 0.0, 360.0, 60.0],  # 3: centre (330, 30)
    ])
    locations = torch.tensor([
        [20.0, 20.0],  # inside 0 and 1, central to both → the smaller, 1
        [4.0, 4.0],  # inside 0 only, but 16 px from its centre > 1.5·8 → not central: −1
        [150.0, 50.0],  # outside every box → −1
        [100.0, 200.0],  # centre of box 2 at level 0: reach 100 > 64 → −1
        [100.0, 200.0],  # the same point at level 1: 64 ≤ 100 ≤ 128 → 2
        [100.0, 200.0],  # level 2: 100 < 128 → −1
        [330.0, 30.0],  # centre of box 3 at level 0: reach 30 → 3
        [330.0, 30.0],  # level 1: 30 < 64 → −1
        [36.0, 36.0],  # inside 0 (not 1); level 2 radius 48 makes it central, but reach 36 < 128 → −1
        [28.0, 28.0],  # inside 0 and 1 and central to both at level 0 → 1
        [31.0, 20.0],  # inside 0 only (1 ends at 30); central to 0 at level 0 (31 < 20 + 12) → 0
    ])
    level_of = torch.tensor([0, 0, 0, 0, 1, 2, 0, 1, 2, 0, 0])
    got = fcos_assign(locations, level_of, boxes, cfg.strides, cfg.scale_ranges, cfg.center_radius)
    assert got.tolist() == [1, -1, -1, -1, 2, -1, 3, -1, -1, 1, 0]
    # No boxes: everything is background.
    none = fcos_assign(locations, level_of, torch.zeros(0, 4), cfg.strides, cfg.scale_ranges, 1.5)
    assert none.tolist() == [-1] * len(locations)


def _locations(padded: tuple[int, int], strides: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """FCOS locations computed here independently: cell (i, j) of level stride s at ((i+.5)s, (j+.5)s)."""
    locs, levels = [], []
    for level, s in enumerate(strides):
        for j in range(padded[0] // s):
            for i in range(padded[1] // s):
                locs.append(((i + 0.5) * s, (j + 0.5) * s))
                levels.append(level)
    return torch.tensor(locs), torch.tensor(levels)


# --------------------------------------------------------------------------------- prediction sets
PS_H, PS_W = 48, 72  # → input 64×96 at min size 64: scale 4/3


def _ps_target() -> dict:
    return {
        "boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0], [30.0, 10.0, 70.0, 46.0], [20.0, 30.5, 45.5, 44.0],
                               [4.5, 4.5, 7.0, 7.0]]),
        "labels": torch.tensor([0, 1, 2, 1]),
    }


def _expected_k(model: CondInst, target: dict) -> list[int]:
    cfg = model.cfg
    scale = (64 / PS_H) * 1.0
    assert round(PS_W * scale) == 96
    locs, levels = _locations((64, 96), cfg.strides)
    matched = fcos_assign(locs, levels, target["boxes"] * scale, cfg.strides, cfg.scale_ranges,
                          cfg.center_radius)
    return [min(int((matched == g).sum()), cfg.topk_per_instance) for g in range(len(target["boxes"]))]


def test_prediction_sets_follow_the_training_assignment(model: CondInst) -> None:
    torch.manual_seed(1)
    image, target = torch.rand(3, PS_H, PS_W), _ps_target()
    model.train()
    sets = model.prediction_sets([image], [target])
    assert model.training  # the mode is restored
    assert len(sets) == 1 and len(sets[0]) == 4
    ks = _expected_k(model, target)
    assert ks[0] > 0 and ks[1] > 0 and ks[2] > 0 and ks[3] == 0
    for g, maps in enumerate(sets[0]):
        win = omega(tuple(target["boxes"][g].tolist()), PS_W, PS_H)
        assert maps.shape == (ks[g], win.height, win.width), g
        assert maps.dtype == torch.float32 and maps.device.type == "cpu"
        if maps.numel():
            assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert sets[0][3].shape == (0, 3, 3)  # Ω of the tiny box: columns and rows 4..6
    # Whole-image maps cropped afterwards hold the same values.
    whole = model.prediction_sets([image], [target], crop_first=False)
    for a, b in zip(sets[0], whole[0], strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_prediction_sets_crop_first_is_bit_exact(model: CondInst) -> None:
    torch.manual_seed(1)
    image, target = torch.rand(3, PS_H, PS_W), _ps_target()
    first = model.prediction_sets([image], [target], crop_first=True)[0]
    whole = model.prediction_sets([image], [target], crop_first=False)[0]
    assert all(torch.equal(a, b) for a, b in zip(first, whole, strict=True))


def test_prediction_sets_are_capped_and_take_given_windows(model: CondInst, monkeypatch) -> None:
    torch.manual_seed(2)
    image, target = torch.rand(3, PS_H, PS_W), _ps_target()
    uncapped = _expected_k(model, target)
    assert max(uncapped) > 3
    monkeypatch.setattr(model.cfg, "topk_per_instance", 3)
    windows = [PixelWindow(0, 0, PS_W, PS_H), PixelWindow(30, 10, 31, 12), PixelWindow(20, 31, 45, 44),
               PixelWindow(4, 4, 7, 7)]
    sets = model.prediction_sets([image], [dict(target, windows=windows)])
    for g, maps in enumerate(sets[0]):
        assert maps.shape == (min(uncapped[g], 3), windows[g].height, windows[g].width)
    # With the whole image as window, the map of the first instance is the crop of its Ω.
    crop = model.prediction_sets([image], [target])[0][0]
    win = omega(tuple(target["boxes"][0].tolist()), PS_W, PS_H)
    assert torch.equal(sets[0][0][:, win.y0:win.y1, win.x0:win.x1], crop)


# ------------------------------------------------------------------------ training and evaluation
def _train_target(with_masks: bool, with_points: bool) -> dict:
    t = {"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0], [30.0, 10.0, 70.0, 46.0]]),
         "labels": torch.tensor([0, 1])}
    if with_masks:
        masks = torch.zeros(2, PS_H, PS_W, dtype=torch.uint8)
        masks[0, 8:36, 8:36] = 1
        masks[1, 14:42, 34:66] = 1
        t["masks"], t["has_mask"] = masks, torch.tensor([True, True])
    if with_points:
        t["points"] = torch.tensor([[[20, 20], [5, 5]], [[50, 30], [0, 0]]])
        t["point_labels"] = torch.tensor([[1, 0], [1, -1]])
    return t


LOSS_KEYS = {"loss_cls", "loss_box", "loss_ctr", "loss_mask", "loss_point"}


def test_training_returns_finite_losses(model: CondInst) -> None:
    torch.manual_seed(3)
    images = [torch.rand(3, PS_H, PS_W), torch.rand(3, PS_H, PS_W)]
    model.train()
    model.zero_grad()
    losses = model(images, [_train_target(True, False), _train_target(False, True)])
    assert set(losses) == LOSS_KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert all(float(v.detach()) > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.head.controller.weight.grad is not None
    assert model.mask_branch.tower[-1].weight.grad.abs().sum() > 0


def test_mask_supervision_gives_a_mask_loss(model: CondInst) -> None:
    model.train()
    losses = model([torch.rand(3, PS_H, PS_W)], [_train_target(True, False)])
    assert float(losses["loss_mask"].detach()) > 0 and float(losses["loss_point"].detach()) == 0
    assert all(torch.isfinite(v) for v in losses.values())


def test_box_only_supervision_has_no_mask_or_point_loss(model: CondInst) -> None:
    model.train()
    target = _train_target(False, False)
    losses = model([torch.rand(3, PS_H, PS_W)], [target])
    assert set(losses) == LOSS_KEYS
    assert float(losses["loss_mask"].detach()) == 0 and float(losses["loss_point"].detach()) == 0
    assert float(losses["loss_cls"].detach()) > 0 and float(losses["loss_box"].detach()) > 0
    assert all(torch.isfinite(v) for v in losses.values())
    # Points that are all padding count as box-only.
    padded = dict(target, points=torch.zeros(2, 1, 2, dtype=torch.long), point_labels=torch.full((2, 1), -1))
    losses = model([torch.rand(3, PS_H, PS_W)], [padded])
    assert float(losses["loss_mask"].detach()) == 0 and float(losses["loss_point"].detach()) == 0


def test_pseudo_masks_are_weighed_apart_and_keep_their_points() -> None:
    """A pseudo mask (GrabCut's) adds ``loss_pseudo_mask`` and, unlike a person's mask, leaves the
    instance's points in the point loss; the weight scales it exactly."""
    torch.manual_seed(0)
    cfg = _tiny_config(pseudo_mask_weight=1.0)
    m = CondInst(cfg)
    m.train()
    image = torch.rand(3, PS_H, PS_W)
    target = {**_train_target(True, True), "mask_is_pseudo": torch.tensor([True, True])}
    torch.manual_seed(1)
    losses = m([image], [target])
    assert float(losses["loss_pseudo_mask"].detach()) > 0 and float(losses["loss_point"].detach()) > 0
    assert float(losses["loss_mask"].detach()) == 0, "no mask a person drew"
    # A person's mask (not pseudo) makes the points redundant and goes to loss_mask instead.
    torch.manual_seed(1)
    real = m([image], [{**target, "mask_is_pseudo": torch.tensor([False, True])}])
    assert float(real["loss_mask"].detach()) > 0 and float(real["loss_pseudo_mask"].detach()) > 0
    m.cfg.pseudo_mask_weight = 0.25
    torch.manual_seed(1)
    quarter = m([image], [target])
    assert float(quarter["loss_pseudo_mask"].detach()) == pytest.approx(
        0.25 * float(losses["loss_pseudo_mask"].detach()), rel=1e-5)
    # Each mask's own weight (its source's trust) scales its term; the mean stays over masks.
    m.cfg.pseudo_mask_weight = 1.0
    torch.manual_seed(1)
    halves = m([image], [{**target, "mask_weight": torch.tensor([0.5, 0.5])}])
    assert float(halves["loss_pseudo_mask"].detach()) == pytest.approx(
        0.5 * float(losses["loss_pseudo_mask"].detach()), rel=1e-5)
    torch.manual_seed(1)
    first = m([image], [{**target, "mask_weight": torch.tensor([1.0, 0.0])}])
    torch.manual_seed(1)
    second = m([image], [{**target, "mask_weight": torch.tensor([0.0, 1.0])}])
    assert float(first["loss_pseudo_mask"].detach()) + float(second["loss_pseudo_mask"].detach()) == pytest.approx(
        float(losses["loss_pseudo_mask"].detach()), rel=1e-5)
    assert float(first["loss_pseudo_mask"].detach()) != pytest.approx(float(second["loss_pseudo_mask"].detach()))


def test_make_target_pastes_pseudo_masks_into_their_windows(small_train) -> None:
    import numpy as np

    from apis.data.loader import PseudoMask, category_index, make_target

    image = next(im for im in small_train.images if len(im.pool) >= 2)
    a, b = image.pool[0], image.pool[1]
    win = omega(a.box, image.width, image.height)
    mask = np.zeros((win.height, win.width), dtype=bool)
    mask[0, 0] = mask[-1, -1] = True
    t = make_target(image, category_index(small_train), mask_ids={b.id}, pseudo_masks={a.id: PseudoMask(win, mask, 0.3),
                                                                                     b.id: PseudoMask(win, mask)})
    assert t["has_mask"][:2].tolist() == [True, True]
    assert t["mask_is_pseudo"][:2].tolist() == [True, False], "a GT mask wins over a pseudo one"
    assert t["mask_weight"][:2].tolist() == pytest.approx([0.3, 1.0]), "a GT mask counts fully"
    pasted = t["masks"][0]
    assert int(pasted.sum()) == 2 and pasted[win.y0, win.x0] == 1 and pasted[win.y1 - 1, win.x1 - 1] == 1
    assert torch.equal(t["masks"][1], torch.from_numpy(b.mask(image.height, image.width)))


def test_band_weights_reach_the_dice_loss_cell_by_cell(small_train) -> None:
    """A pseudo mask with band weights: its pixels' weights are pasted into its window (1 elsewhere), follow a flip,
    are averaged into the mask cells, and a cell at weight 0 is left out of the dice (no gradient reaches it)."""
    import numpy as np

    from apis.data.loader import PseudoMask, category_index, make_target
    from apis.mask_checks import radial_bands
    from apis.models.losses import dice_loss

    image = next(im for im in small_train.images if len(im.pool) >= 2)
    a = image.pool[0]
    win = omega(a.box, image.width, image.height)
    bands = (1.0, 1.0, 0.5, 0.0, 1.0, 1.0)
    pm = PseudoMask(win, np.ones((win.height, win.width), bool), 0.7, bands)
    expect = np.asarray(bands, np.float32)[radial_bands(win)]
    assert np.array_equal(pm.pixel_weights(), expect)
    t = make_target(image, category_index(small_train), pseudo_masks={a.id: pm})
    w = t["mask_pixel_weights"]
    assert w.dtype == torch.uint8 and w.shape == t["masks"].shape
    assert torch.equal(w[0, win.y0 : win.y1, win.x0 : win.x1], torch.from_numpy(np.rint(expect * 255).astype(np.uint8)))
    assert int(w[0].sum()) == int(np.rint(expect * 255).sum()) + 255 * (image.height * image.width - expect.size)
    assert bool((w[1:] == 255).all()), "an instance without band weights weighs every pixel fully"
    _, flipped = hflip(torch.zeros(3, image.height, image.width), t)
    assert torch.equal(flipped["mask_pixel_weights"], w.flip(-1))
    # Into the input frame: the mean weight of each mask cell.
    batch = batch_images([torch.zeros(3, image.height, image.width)], 64, 1000, 32)
    (moved,) = targets_to_input_frame([t], batch, 8)
    cells = moved["mask_target_weights"]
    assert cells.shape == moved["mask_targets"].shape and float(cells.min()) >= 0 and float(cells.max()) <= 1 + 1e-6
    assert float(cells[0].min()) < 0.5 and float(cells[1].min()) == pytest.approx(1.0)
    # The weighted dice: 1 − 2Σwpt / (Σwp² + Σwt²); uniform weights change nothing, a cell at 0 is out of it.
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 4, requires_grad=True), (torch.rand(2, 4, 4) > 0.5).float()
    assert torch.allclose(dice_loss(logits, target, weights=torch.full((2, 4, 4), 0.3)), dice_loss(logits, target))
    cw = torch.ones(2, 4, 4)
    cw[:, 0, :] = 0.0
    p = torch.sigmoid(logits.detach())[:, 1:].flatten(1)
    by_hand = 1 - 2 * (p * target[:, 1:].flatten(1)).sum(1) / ((p * p).sum(1) + (target[:, 1:].flatten(1) ** 2).sum(1))
    loss = dice_loss(logits, target, weights=cw)
    assert torch.allclose(loss, by_hand, atol=1e-5)
    loss.sum().backward()
    assert bool((logits.grad[:, 0, :] == 0).all()) and bool((logits.grad[:, 1:, :] != 0).any())


def test_training_needs_targets(model: CondInst) -> None:
    model.train()
    with pytest.raises(ValueError, match="targets"):
        model([torch.rand(3, PS_H, PS_W)])


def test_evaluation_returns_detections_at_the_original_size(model: CondInst, monkeypatch) -> None:
    monkeypatch.setattr(model.cfg, "score_thresh", 0.001)  # a random-init model scores ~0.01
    monkeypatch.setattr(model.cfg, "detections_per_image", 20)
    torch.manual_seed(4)
    sizes = [(50, 70), (45, 37)]  # non-square, not multiples of 32
    model.eval()
    with torch.no_grad():
        results = model([torch.rand(3, h, w) for h, w in sizes])
    assert len(results) == 2
    for (h, w), r in zip(sizes, results, strict=True):
        assert set(r) >= {"boxes", "labels", "scores", "masks"}
        n = r["boxes"].shape[0]
        assert 0 < n <= 20
        assert r["boxes"].shape == (n, 4) and r["labels"].shape == (n,) and r["scores"].shape == (n,)
        assert r["masks"].shape == (n, 1, h, w)
        assert float(r["masks"].min()) >= 0 and float(r["masks"].max()) <= 1
        assert r["labels"].dtype == torch.long and bool(((r["labels"] >= 0) & (r["labels"] < 3)).all())
        assert bool((r["scores"][:-1] >= r["scores"][1:]).all())
        b = r["boxes"]
        assert bool((b[:, 0] >= 0).all() and (b[:, 2] <= w + 1e-4).all())
        assert bool((b[:, 1] >= 0).all() and (b[:, 3] <= h + 1e-4).all())
        assert bool((b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all())
