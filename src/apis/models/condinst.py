"""CondInst (Tian et al., 2020) trained from boxes plus point, mask or no mask supervision per instance.

torchvision provides the FPN, the convolution blocks, the focal and GIoU losses and NMS; this module
adds what it lacks: FCOS label assignment, the controller, the mask branch, the dynamic mask head and
the prediction sets used for point selection.

Frames: inputs and outputs are in original image pixels. Internally each image is resized and padded
(:mod:`apis.models.transform`); a location of FPN level with stride ``s`` at grid cell (i, j) sits at
the input-frame point ``((i + 0.5) s, (j + 0.5) s)``; mask features and logits have stride 4 and
cover the padded input frame exactly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import (
    Conv2dNormActivation,
    FeaturePyramidNetwork,
    batched_nms,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
)
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from apis.geometry import PixelWindow, omega, pixel_centres, sample_grid
from apis.models.backbone import Backbone, BackboneConfig, build_backbone
from apis.models.losses import (
    box_projection_loss,
    colour_affinity,
    dice_loss,
    pairwise_loss,
    point_logits,
    point_loss,
)
from apis.models.transform import ImageBatch, batch_images, targets_to_input_frame

INF = 1e8
MASK_STRIDE = 4  # mask features and mask logits cover the input frame at this stride
# Point groups of the training statistics: P0's uniform random points (step 0) and acquired ones (step ≥ 1).
POINT_GROUPS = ("random", "acquired")
STAT_PREFIX = "stat_"  # keys of statistics, not losses, in the training output (see CondInst.forward)


ARCHITECTURES = ("condinst", "maskrcnn")  # model.architecture; apis.models.build_model builds them
# The architectures that train BoxInst's projection and colour-pairwise losses (Mask R-CNN refuses them).
BOXINST_ARCHITECTURES = ("condinst",)


@dataclass(frozen=True)
class RCNNConfig:
    """Mask R-CNN settings that CondInst does not have (``model.rcnn``; read by
    :mod:`apis.models.maskrcnn` only). Sizes are in input-frame pixels.

    ``anchor_sizes``: one anchor size per FPN level, P2–P5 (4 sizes) or P2–P6 (5 sizes; P6 max-pools
    P5, as torchvision does). The default fits the tiny preset's 128–192 px images, whose objects are
    about 8–190 px; COCO at 800 px wants torchvision's (32, 64, 128, 256, 512)."""

    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)  # pixels, one per FPN level (above)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width of the anchors at every level
    rpn_pre_nms_topk: int = 1000  # per level, training and test
    rpn_post_nms_topk: int = 300  # proposals per image, training and test
    rpn_nms_thresh: float = 0.7  # box IoU of the RPN's non-maximum suppression
    rpn_batch_size: int = 256  # anchors sampled per image for the RPN losses
    roi_batch_size: int = 128  # proposals sampled per image for the box and mask losses
    roi_positive_fraction: float = 0.25  # share of positives among the sampled proposals
    box_head_dim: int = 256  # width of the box head's two fully connected layers
    mask_head_channels: int = 64  # width of the mask head's convolutions (28×28 mask logits per proposal)
    mask_head_convs: int = 4  # its 3×3 convolutions before the mask logits


@dataclass
class CondInstConfig:
    """The model config. Sizes are in input-frame pixels.

    ``architecture`` picks the model: ``condinst`` (this module) or ``maskrcnn``
    (:class:`apis.models.maskrcnn.MaskRCNN`), which reads the shared fields (backbone, ``fpn_channels``,
    sizes, thresholds, loss weights, ``topk_per_instance``) and its own ``rcnn``."""

    num_classes: int  # set from the training set's categories when a model is built (a config's value is replaced)
    architecture: str = "condinst"  # or "maskrcnn"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn_channels: int = 64  # channels of every FPN level and of the heads
    extra_levels: int = 0  # 2 adds P6/P7 as in CondInst for large images
    head_convs: int = 2  # convolutions in each of the head's class and box towers
    mask_branch_channels: int = 64  # width of the mask branch (stride-4 features shared by all instances)
    mask_branch_convs: int = 2  # its 3×3 convolutions after the FPN levels are merged
    mask_channels: int = 8  # feature channels the dynamic mask head reads (plus two relative coordinates)
    dyn_channels: int = 8  # width of the dynamic mask head's hidden layers, whose weights the controller predicts
    center_radius: float = 1.5  # a location is positive for a box within this many strides of its centre (FCOS)
    # Positive locations per GT instance that give masks in training, the highest scoring (CondInst); Mask R-CNN:
    # proposals per instance. The prediction set A of an instance holds at most this many maps.
    topk_per_instance: int = 64
    focal_alpha: float = 0.25  # the classification focal loss
    focal_gamma: float = 2.0  # the focal loss's focusing exponent
    train_min_sizes: tuple[int, ...] = (160,)  # short side of each training image, drawn from these per batch
    test_min_size: int = 160  # short side at evaluation, selection and export (see max_test_upscale)
    max_size: int = 1333  # cap on the long side, training and test
    # Where the training set's median box is under 16 px across at test_min_size, test (evaluate, select,
    # export) at a larger size, up to this factor (apis.models.model_config_for); 1 = never. Training sizes stay.
    max_test_upscale: float = 1.0
    score_thresh: float = 0.05  # detections scoring below this are dropped
    nms_thresh: float = 0.6  # box IoU of non-maximum suppression, per class
    pre_nms_topk: int = 1000  # candidates kept per image before NMS
    detections_per_image: int = 100  # kept after NMS, highest score first
    point_loss_weight: float = 1.0  # PointSup's point loss; a schedule's point_loss_weight overrides it
    mask_loss_weight: float = 1.0  # dice loss on full masks (supervision by masks, or masks AFIS bought)
    # BoxInst's projection loss on every instance (its box is always known); 0 = the paper's PointSup
    # supervision alone (both presets). Needed for a box-only model, where nothing else teaches masks.
    box_projection_weight: float = 0.0
    pairwise_weight: float = 0.0  # BoxInst's colour-affinity loss, used together with the projection loss
    # Dice loss on masks no person drew (GrabCut's from the box and the answered points, see
    # apis.pseudo_masks), beside the point loss; 0 leaves them out of training.
    pseudo_mask_weight: float = 0.0
    # Point supervision says nothing about pixels outside the box, so the dynamic masks bleed there;
    # like Mask R-CNN's paste-in-box, keep each predicted mask inside its predicted box.
    crop_masks_to_boxes: bool = True
    rcnn: RCNNConfig = field(default_factory=RCNNConfig)

    @property
    def strides(self) -> list[int]:
        return [8 * 2**i for i in range(3 + self.extra_levels)]

    @property
    def scale_ranges(self) -> list[tuple[float, float]]:
        """FCOS's object-size ranges per level: [0, 64], [64, 128], ... with the last open."""
        bounds = [0.0] + [64.0 * 2**i for i in range(len(self.strides) - 1)] + [INF]
        return list(zip(bounds[:-1], bounds[1:], strict=True))


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, max(1, c // 8)), c)


def _tower(c: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[Conv2dNormActivation(c, c, 3, norm_layer=_gn, bias=True) for _ in range(n)])


class Head(nn.Module):
    """FCOS head shared over levels, plus CondInst's controller on the box tower."""

    def __init__(self, cfg: CondInstConfig, num_params: int):
        super().__init__()
        c = cfg.fpn_channels
        self.cls_tower = _tower(c, cfg.head_convs)
        self.box_tower = _tower(c, cfg.head_convs)
        self.cls_logits = nn.Conv2d(c, cfg.num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(c, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(c, 1, 3, padding=1)
        self.controller = nn.Conv2d(c, num_params, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(cfg.strides)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # Focal-loss prior: start every location at 1% foreground so the loss does not explode.
        nn.init.constant_(self.cls_logits.bias, -4.59512)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], ...]:
        cls, box, ctr, ctrl = [], [], [], []
        for level, f in enumerate(feats):
            c = self.cls_tower(f)
            b = self.box_tower(f)
            cls.append(self.cls_logits(c))
            box.append(self.box_pred(b) * self.scales[level])
            ctr.append(self.ctrness(b))
            ctrl.append(self.controller(b))
        return cls, box, ctr, ctrl


class MaskBranch(nn.Module):
    """Fuses P3–P5 and the backbone's stride-4 map into mask features at stride 4
    (B×mask_channels×H/4×W/4): CondInst's branch works at stride 8, which on small images leaves
    thin parts (bars, rings) a pixel or two wide, so it is refined once more here."""

    def __init__(self, cfg: CondInstConfig, fine_channels: int):
        super().__init__()
        c, m = cfg.fpn_channels, cfg.mask_branch_channels
        self.refine = nn.ModuleList([Conv2dNormActivation(c, m, 3, norm_layer=nn.BatchNorm2d) for _ in range(3)])
        self.lateral = Conv2dNormActivation(fine_channels, m, 1, norm_layer=nn.BatchNorm2d)
        self.tower = nn.Sequential(
            *[Conv2dNormActivation(m, m, 3, norm_layer=nn.BatchNorm2d) for _ in range(cfg.mask_branch_convs)],
            nn.Conv2d(m, cfg.mask_channels, 1),
        )

    def forward(self, feats: list[Tensor], fine: Tensor) -> Tensor:
        x = self.refine[0](feats[0])
        for refine, f in zip(self.refine[1:], feats[1:3], strict=True):
            x = x + F.interpolate(refine(f), size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False) + self.lateral(fine)
        return self.tower(x)


def init_dynamic_bias(bias: Tensor, in_channels: int, hidden: int) -> None:
    """Start the controller's bias at a Kaiming-initialised mask head (its weights stay near 0, so every
    location begins with this head). With all-zero dynamic weights, as a zero bias gives, the gradient
    reaching each layer is the product of the other layers' near-zero weights, and sparse point labels
    barely move the mask head for hundreds of iterations."""
    with torch.no_grad():
        parts = []
        for fan_in, fan_out in ((in_channels + 2, hidden), (hidden, hidden), (hidden, 1)):
            w = torch.empty(fan_out, fan_in)
            nn.init.kaiming_uniform_(w, a=1.0)
            parts.append(w.flatten())
        parts.append(torch.zeros(2 * hidden + 1))
        bias.copy_(torch.cat(parts))


def dynamic_param_count(in_channels: int, hidden: int) -> int:
    """Weights and biases of the three 1×1 layers: (in+2 → hidden → hidden → 1)."""
    return (in_channels + 2) * hidden + hidden + hidden * hidden + hidden + hidden + 1


def fcos_assign(
    locations: Tensor,
    level_of: Tensor,
    boxes: Tensor,
    strides: list[int],
    scale_ranges: list[tuple[float, float]],
    center_radius: float,
) -> Tensor:
    """FCOS label assignment with centre sampling.

    ``locations`` N×2 input-frame points, ``level_of`` N level index, ``boxes`` G×4 xyxy.
    A location is a candidate for a box when it lies inside the box, within ``center_radius · stride``
    of the box centre, and the box's largest side distance fits the level's range; among candidates
    the smallest box wins. Returns N indices into ``boxes`` (−1 for background).
    """
    n = locations.shape[0]
    if boxes.numel() == 0:
        return torch.full((n,), -1, dtype=torch.long, device=locations.device)
    x, y = locations[:, 0:1], locations[:, 1:2]
    ltrb = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=2)  # N×G×4
    inside = ltrb.min(dim=2).values > 0
    stride = torch.tensor(strides, dtype=locations.dtype, device=locations.device)[level_of][:, None]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    r = stride * center_radius
    cx0, cy0 = torch.maximum(cx - r, boxes[:, 0]), torch.maximum(cy - r, boxes[:, 1])
    cx1, cy1 = torch.minimum(cx + r, boxes[:, 2]), torch.minimum(cy + r, boxes[:, 3])
    central = (x > cx0) & (x < cx1) & (y > cy0) & (y < cy1)
    ranges = torch.tensor(scale_ranges, dtype=locations.dtype, device=locations.device)[level_of]
    reach = ltrb.max(dim=2).values
    fits = (reach >= ranges[:, 0:1]) & (reach <= ranges[:, 1:2])
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(n, -1)
    area = torch.where(inside & central & fits, area, torch.full_like(area, INF))
    best_area, best = area.min(dim=1)
    return torch.where(best_area < INF, best, torch.full_like(best, -1))


def box_pixels(boxes: Tensor, height: int, width: int) -> Tensor:
    """N×H×W bool: pixels whose centres lie inside each xyxy box (the Ω rule of apis.geometry)."""
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    in_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])
    in_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])
    return in_y[:, :, None] & in_x[:, None, :]


def box_cells(boxes: Tensor, h: int, w: int, stride: int) -> Tensor:
    """N×h×w bool: cells of a stride-``stride`` grid whose centres lie inside each xyxy box."""
    return box_pixels(boxes / stride, h, w)


def centerness_target(ltrb: Tensor) -> Tensor:
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    return torch.sqrt((lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values))


@dataclass
class _Flat:
    """Head outputs of one batch flattened over levels (N locations in all)."""

    cls: Tensor  # B×N×C logits
    box: Tensor  # B×N×4 ltrb distances, input pixels
    ctr: Tensor  # B×N logits
    params: Tensor  # B×N×P controller outputs
    locations: Tensor  # N×2 input-frame points
    level_of: Tensor  # N


class CondInst(nn.Module):
    """``model(images, targets)`` → dict of losses (training); ``model(images)`` → list of dicts with
    ``boxes`` (N×4 xyxy original pixels), ``labels`` (N, 0-based class index), ``scores`` (N) and
    ``masks`` (N×1×H×W probabilities at the original size) (evaluation).

    ``images``: list of 3×H×W float tensors in [0, 1] at their original size. ``targets``: one dict per
    image, see :func:`apis.models.transform.targets_to_input_frame` for the keys.

    ``model(images, targets, point_stats=True)`` adds, beside the losses, statistics of the labelled
    points under keys starting with :data:`STAT_PREFIX` (no gradient; they are not losses and must be
    left out of the summed loss): for each group of :data:`POINT_GROUPS` (by the targets'
    ``point_steps``: 0 → random, ≥ 1 → acquired) ``stat_points_{group}``, the labelled points of the
    instances that got masks, and ``stat_right_{group}``, those where the mean of the instance's mask
    probabilities at the point is on the label's side of 0.5 (the judgement of :class:`Choice.p_mean`).
    """

    def __init__(self, cfg: CondInstConfig, backbone: Backbone | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else build_backbone(cfg.backbone)
        c = cfg.fpn_channels
        extra = LastLevelP6P7(c, c) if cfg.extra_levels == 2 else None
        if cfg.extra_levels not in (0, 2):
            raise ValueError("extra_levels must be 0 (P3–P5) or 2 (P3–P7)")
        self.fpn = FeaturePyramidNetwork(self.backbone.out_channels[1:], c, extra_blocks=extra)
        self.num_params = dynamic_param_count(cfg.mask_channels, cfg.dyn_channels)
        self.head = Head(cfg, self.num_params)
        init_dynamic_bias(self.head.controller.bias, cfg.mask_channels, cfg.dyn_channels)
        self.mask_branch = MaskBranch(cfg, self.backbone.out_channels[0])

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, images: list[Tensor], targets: list[dict] | None = None, point_stats: bool = False):
        if self.training and targets is None:
            raise ValueError("CondInst needs targets in training mode")
        batch = self._batch(images)
        flat, mask_feats = self._features(batch)
        if self.training:
            return self._losses(flat, mask_feats, targets_to_input_frame(targets, batch, MASK_STRIDE),
                                batch, point_stats)
        return self._postprocess(flat, mask_feats, batch)

    def _batch(self, images: list[Tensor], min_size: int | None = None) -> ImageBatch:
        if min_size is None:
            sizes = self.cfg.train_min_sizes
            # Multi-scale training draws from torch's generator, which the trainer seeds per iteration.
            min_size = sizes[int(torch.randint(len(sizes), (1,)))] if self.training else self.cfg.test_min_size
        return batch_images(images, min_size, self.cfg.max_size)

    def _features(self, batch: ImageBatch) -> tuple[_Flat, Tensor]:
        fine, *feats = self.backbone(batch.tensors)
        levels = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())
        cls, box, ctr, ctrl = self.head(levels)
        mask_feats = self.mask_branch(levels[:3], fine)
        locs, level_of = [], []
        for level, (f, s) in enumerate(zip(cls, self.cfg.strides, strict=True)):
            h, w = f.shape[-2:]
            ys = (torch.arange(h, device=f.device, dtype=torch.float32) + 0.5) * s
            xs = (torch.arange(w, device=f.device, dtype=torch.float32) + 0.5) * s
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            locs.append(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1))
            level_of.append(torch.full((h * w,), level, device=f.device, dtype=torch.long))

        def flat(xs: list[Tensor]) -> Tensor:
            return torch.cat([x.flatten(2).transpose(1, 2) for x in xs], dim=1)

        strides = torch.cat([torch.full((x.shape[-2] * x.shape[-1],), float(s), device=x.device)
                             for x, s in zip(box, self.cfg.strides, strict=True)])
        # exp keeps distances positive; clamp guards the first iterations from overflow.
        box_ltrb = torch.exp(flat(box).clamp(max=10.0)) * strides[None, :, None]
        heads = _Flat(flat(cls), box_ltrb, flat(ctr)[..., 0], flat(ctrl), torch.cat(locs), torch.cat(level_of))
        return heads, mask_feats

    # ------------------------------------------------------------------------------------- mask head
    def mask_logits(self, mask_feats: Tensor, params: Tensor, locations: Tensor, level_of: Tensor) -> Tensor:
        """Dynamic mask head. ``mask_feats`` Cm×h×w (one image, stride 4); ``params`` M×P; ``locations``
        M×2 input-frame points; ``level_of`` M. Returns M×h×w logits at stride 4."""
        m = params.shape[0]
        cm, h, w = mask_feats.shape
        if m == 0:
            return mask_feats.new_zeros((0, h, w))
        s = MASK_STRIDE
        ys = (torch.arange(h, device=params.device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=params.device, dtype=torch.float32) + 0.5) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 0)  # 2×hw
        soi = (64.0 * 2.0 ** level_of.float())[:, None, None]
        rel = (locations[:, :, None] - grid[None]) / soi  # M×2×hw
        x = torch.cat([rel.to(mask_feats.dtype), mask_feats.reshape(1, cm, h * w).expand(m, -1, -1)], dim=1)
        d = self.cfg.dyn_channels
        sizes = [(cm + 2) * d, d * d, d, d, d, 1]
        w0, w1, w2, b0, b1, b2 = torch.split(params, [sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5]], 1)
        x = F.relu(torch.bmm(w0.reshape(m, d, cm + 2), x) + b0[:, :, None])
        x = F.relu(torch.bmm(w1.reshape(m, d, d), x) + b1[:, :, None])
        x = torch.bmm(w2.reshape(m, 1, d), x) + b2[:, :, None]
        return x.reshape(m, h, w)

    # --------------------------------------------------------------------------------------- training
    def _assign(self, flat: _Flat, boxes: Tensor) -> Tensor:
        return fcos_assign(flat.locations, flat.level_of, boxes, self.cfg.strides, self.cfg.scale_ranges,
                           self.cfg.center_radius)

    def positives(self, flat: _Flat, b: int, labels: Tensor, matched: Tensor) -> tuple[Tensor, Tensor]:
        """Positive locations of image ``b`` that give masks: at most ``topk_per_instance`` per GT,
        the ones the model scores highest for the GT's class (detached), as CondInst does.
        Returns (location indices, GT indices), grouped by GT in GT order."""
        pos = torch.nonzero(matched >= 0).flatten()
        if pos.numel() == 0:
            return pos, pos
        gt = matched[pos]
        with torch.no_grad():
            score = torch.sigmoid(flat.cls[b, pos, labels[gt]]) * torch.sigmoid(flat.ctr[b, pos])
        keep_loc, keep_gt = [], []
        for g in torch.unique(gt):
            sel = pos[gt == g]
            s = score[gt == g]
            if sel.numel() > self.cfg.topk_per_instance:
                sel = sel[torch.topk(s, self.cfg.topk_per_instance).indices.sort().values]
            keep_loc.append(sel)
            keep_gt.append(torch.full_like(sel, int(g)))
        return torch.cat(keep_loc), torch.cat(keep_gt)

    def _losses(self, flat: _Flat, mask_feats: Tensor, targets: list[dict], batch: ImageBatch,
                point_stats: bool = False) -> dict[str, Tensor]:
        cfg = self.cfg
        stats = {f"{STAT_PREFIX}{k}_{g}": torch.zeros((), device=flat.cls.device)
                 for k in ("points", "right") for g in POINT_GROUPS} if point_stats else {}
        cls_t = torch.zeros_like(flat.cls)
        pos_box, pos_gt_box, pos_ctr, pos_loc = [], [], [], []
        dice_terms, pseudo_terms, point_terms, point_counts, proj_terms, pair_terms = [], [], [], [], [], []
        affinity = colour_affinity(batch.tensors, MASK_STRIDE) if cfg.pairwise_weight > 0 else None
        for b, t in enumerate(targets):
            boxes, labels = t["boxes"], t["labels"].long()
            matched = self._assign(flat, boxes)
            fg = matched >= 0
            cls_t[b, fg, labels[matched[fg]]] = 1.0
            pos_box.append(flat.box[b, fg])
            pos_gt_box.append(boxes[matched[fg]])
            pos_ctr.append(flat.ctr[b, fg])
            pos_loc.append(flat.locations[fg])
            loc_idx, gt_idx = self.positives(flat, b, labels, matched)
            if loc_idx.numel() == 0:
                continue
            has_mask = t.get("has_mask")
            has_points = "point_centres" in t
            need = torch.full_like(gt_idx, cfg.box_projection_weight > 0 or cfg.pairwise_weight > 0, dtype=torch.bool)
            if has_mask is not None:
                need |= has_mask[gt_idx]
            if has_points:
                need |= (t["point_labels"][gt_idx] >= 0).any(1)
            if not bool(need.any()):
                continue
            loc_idx, gt_idx = loc_idx[need], gt_idx[need]
            logits = self.mask_logits(mask_feats[b], flat.params[b, loc_idx], flat.locations[loc_idx],
                                      flat.level_of[loc_idx])
            if cfg.box_projection_weight > 0:
                proj_terms.append(box_projection_loss(logits, boxes[gt_idx], MASK_STRIDE))
            if affinity is not None:
                inside = box_cells(boxes[gt_idx], logits.shape[-2], logits.shape[-1], MASK_STRIDE)
                aff = affinity[b][None].expand(logits.shape[0], -1, -1, -1)
                pair_terms.append(pairwise_loss(logits, aff, inside))
            pseudo = t.get("mask_is_pseudo")
            real = None
            if has_mask is not None:
                real = has_mask[gt_idx] & ~pseudo[gt_idx] if pseudo is not None else has_mask[gt_idx]
                if bool(real.any()):
                    dice_terms.append(dice_loss(logits[real], t["mask_targets"][gt_idx[real]]))
                fake = has_mask[gt_idx] & ~real
                if bool(fake.any()):
                    # Each pseudo mask counts as much as its source has earned (PseudoMask.weight); the mean
                    # stays over masks, so a set whose sources all earn w learns as with pseudo_mask_weight·w.
                    w = t["mask_weight"][gt_idx[fake]] if "mask_weight" in t else 1.0
                    # Within a mask, each cell as much as its band of the box has earned (PseudoMask.band_weights).
                    cells = t["mask_target_weights"][gt_idx[fake]] if "mask_target_weights" in t else None
                    pseudo_terms.append(w * dice_loss(logits[fake], t["mask_targets"][gt_idx[fake]], weights=cells))
            if has_points:
                labels_p = t["point_labels"][gt_idx]
                if real is not None:  # a full mask makes the instance's points redundant; a pseudo one does not
                    labels_p = torch.where(real[:, None], torch.full_like(labels_p, -1), labels_p)
                n = int((labels_p >= 0).sum())
                if n:
                    point_terms.append(point_loss(logits, t["point_centres"][gt_idx], labels_p,
                                                  batch.padded_size) * n)
                    point_counts.append(n)
                    if point_stats:
                        self._count_points(stats, logits, gt_idx, labels_p, t, batch.padded_size)
        num_pos = max(float(sum(x.shape[0] for x in pos_box)), 1.0)
        losses = {"loss_cls": sigmoid_focal_loss(flat.cls, cls_t, cfg.focal_alpha, cfg.focal_gamma, "sum") / num_pos}
        box_p, box_g = torch.cat(pos_box), torch.cat(pos_gt_box)
        if box_p.shape[0]:
            loc = torch.cat(pos_loc)
            pred = torch.cat([loc - box_p[:, :2], loc + box_p[:, 2:]], 1)
            gt_ltrb = torch.cat([loc - box_g[:, :2], box_g[:, 2:] - loc], 1)
            ctr_t = centerness_target(gt_ltrb)
            giou = generalized_box_iou_loss(pred, box_g, reduction="none")
            losses["loss_box"] = (giou * ctr_t).sum() / ctr_t.sum().clamp(min=1e-6)
            ctr_bce = F.binary_cross_entropy_with_logits(torch.cat(pos_ctr), ctr_t, reduction="sum")
            losses["loss_ctr"] = ctr_bce / num_pos
        else:
            losses["loss_box"] = flat.box.sum() * 0.0
            losses["loss_ctr"] = flat.ctr.sum() * 0.0
        zero = (mask_feats.sum() + flat.params.sum()) * 0.0
        losses["loss_mask"] = cfg.mask_loss_weight * torch.cat(dice_terms).mean() if dice_terms else zero
        if cfg.pseudo_mask_weight > 0:
            losses["loss_pseudo_mask"] = (cfg.pseudo_mask_weight * torch.cat(pseudo_terms).mean()
                                          if pseudo_terms else zero)
        if cfg.box_projection_weight > 0:
            losses["loss_proj"] = cfg.box_projection_weight * torch.cat(proj_terms).mean() if proj_terms else zero
        if cfg.pairwise_weight > 0:
            losses["loss_pairwise"] = cfg.pairwise_weight * torch.cat(pair_terms).mean() if pair_terms else zero
        losses["loss_point"] = (cfg.point_loss_weight * sum(point_terms) / sum(point_counts)
                                if point_terms else zero)
        return {**losses, **stats} if point_stats else losses

    @torch.no_grad()
    def _count_points(self, stats: dict[str, Tensor], logits: Tensor, gt_idx: Tensor, labels_p: Tensor, t: dict,
                      frame_size: tuple[int, int]) -> None:
        """Add one image's labelled points to ``stats`` (see the class docstring). ``logits`` M×h×w of the
        positive locations, ``gt_idx`` M their GT instance, ``labels_p`` M×P their points' labels."""
        gts, row = torch.unique(gt_idx, return_inverse=True)
        probs = torch.sigmoid(point_logits(logits.detach().float(), t["point_centres"][gt_idx], frame_size))
        mean = torch.zeros((len(gts), probs.shape[1]), device=probs.device).index_add_(0, row, probs)
        mean /= torch.bincount(row, minlength=len(gts))[:, None]
        # Rows of one GT share its labels: any of them will do.
        labels = labels_p[torch.zeros_like(gts).scatter_(0, row, torch.arange(len(row), device=row.device))]
        steps = t["point_steps"][gts] if "point_steps" in t else torch.zeros_like(labels)
        right = (mean > 0.5) == (labels == 1)
        for group, member in zip(POINT_GROUPS, (steps == 0, steps >= 1), strict=True):
            member = member & (labels >= 0)
            stats[f"{STAT_PREFIX}points_{group}"] += member.sum()
            stats[f"{STAT_PREFIX}right_{group}"] += (member & right).sum()

    # ------------------------------------------------------------------------------------- inference
    def _postprocess(self, flat: _Flat, mask_feats: Tensor, batch: ImageBatch) -> list[dict]:
        cfg = self.cfg
        results = []
        for b, ((h, w), (oh, ow), (sx, sy)) in enumerate(zip(batch.sizes, batch.original_sizes, batch.scales,
                                                               strict=True)):
            probs = torch.sigmoid(flat.cls[b])
            ctr = torch.sigmoid(flat.ctr[b])
            cand = torch.nonzero(probs > cfg.score_thresh)
            loc_idx, cls_idx = cand[:, 0], cand[:, 1]
            score = torch.sqrt(probs[loc_idx, cls_idx] * ctr[loc_idx])
            if score.numel() > cfg.pre_nms_topk:
                top = torch.topk(score, cfg.pre_nms_topk).indices
                loc_idx, cls_idx, score = loc_idx[top], cls_idx[top], score[top]
            loc = flat.locations[loc_idx]
            ltrb = flat.box[b, loc_idx]
            boxes = torch.cat([loc - ltrb[:, :2], loc + ltrb[:, 2:]], 1)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            keep = batched_nms(boxes, score, cls_idx, cfg.nms_thresh)[: cfg.detections_per_image]
            loc_idx, cls_idx, score, boxes = loc_idx[keep], cls_idx[keep], score[keep], boxes[keep]
            logits = self.mask_logits(mask_feats[b], flat.params[b, loc_idx], flat.locations[loc_idx],
                                      flat.level_of[loc_idx])
            masks = torch.sigmoid(self.to_original(logits, PixelWindow(0, 0, ow, oh), (sx, sy), batch.padded_size))
            boxes = boxes / boxes.new_tensor([sx, sy, sx, sy])
            if cfg.crop_masks_to_boxes:
                masks = masks * box_pixels(boxes, oh, ow).to(masks.dtype)
            results.append({"boxes": boxes, "labels": cls_idx, "scores": score, "masks": masks[:, None]})
        return results

    @staticmethod
    def to_original(logits: Tensor, window: PixelWindow, scale: tuple[float, float],
                    padded_size: tuple[int, int]) -> Tensor:
        """Read M×h×w stride-4 logits (covering the padded input frame of ``padded_size``) at the centres
        of the original pixels in ``window``. Returns M×window.height×window.width logits."""
        ys, xs = pixel_centres(window)
        ys, xs = ys.to(logits.device) * scale[1], xs.to(logits.device) * scale[0]
        if logits.shape[0] == 0:
            return logits.new_zeros((0, window.height, window.width))
        return sample_grid(logits[:, None], xs, ys, padded_size)[:, 0]

    # ------------------------------------------------------------------------------- prediction sets
    @torch.no_grad()
    def prediction_sets(self, images: list[Tensor], targets: list[dict], min_size: int | None = None,
                        crop_first: bool = True) -> list[list[Tensor]]:
        """Multiple-anchor prediction sets (the paper's "A").

        For every GT instance (``targets[b]["boxes"]`` G×4 xyxy original pixels, ``labels`` G), the mask
        probability maps of the positive locations that the model's own training assignment matches to
        it (capped at ``topk_per_instance``), read at the pixel centres of the instance's Ω
        (``targets[b]["windows"]``, a list of :class:`PixelWindow`, or :func:`apis.geometry.omega` of the
        box). Returns, per image, per instance, a K×h×w float tensor on the CPU (K may be 0).
        ``crop_first=False`` computes each map over the whole image and then crops (same values; for
        tests and for callers that want whole maps).
        """
        was_training = self.training
        self.eval()
        try:
            batch = self._batch(images, min_size if min_size is not None else self.cfg.test_min_size)
            flat, mask_feats = self._features(batch)
            out = []
            for b, t in enumerate(targets):
                oh, ow = batch.original_sizes[b]
                sx, sy = batch.scales[b]
                boxes = t["boxes"].float().to(flat.locations.device)
                labels = t["labels"].long().to(flat.locations.device)
                windows = t.get("windows") or [omega(tuple(bx.tolist()), ow, oh) for bx in t["boxes"]]
                matched = self._assign(flat, boxes * boxes.new_tensor([sx, sy, sx, sy]))
                loc_idx, gt_idx = self.positives(flat, b, labels, matched)
                logits = self.mask_logits(mask_feats[b], flat.params[b, loc_idx], flat.locations[loc_idx],
                                          flat.level_of[loc_idx])
                sets = []
                for g, win in enumerate(windows):
                    sel = logits[gt_idx == g]
                    if crop_first:
                        maps = self.to_original(sel, win, (sx, sy), batch.padded_size)
                    else:
                        full = self.to_original(sel, PixelWindow(0, 0, ow, oh), (sx, sy), batch.padded_size)
                        maps = full[:, win.y0:win.y1, win.x0:win.x1].contiguous()
                    sets.append(torch.sigmoid(maps).float().cpu())
                out.append(sets)
            return out
        finally:
            self.train(was_training)
