"""Mask R-CNN (He et al., 2017) trained from boxes plus point, mask or no mask supervision per instance.

torchvision provides the whole detector: FPN, anchors, RPN, RoIAlign, box and mask heads, proposal
matching and sampling, the Fast R-CNN losses and the box post-processing. This module assembles it
around our backbone and changes only what point supervision needs:

* the mask loss is chosen per instance, as detectron2's PointSup does: a point-supervised instance
  scores each of its positive proposals' M×M mask logits at its labelled points (bilinear, BCE;
  points outside the proposal box are ignored), a full-mask instance keeps Mask R-CNN's per-cell BCE,
  a box-only instance has no mask loss;
* masks are read at original pixel centres through the same box frame the point loss uses (see
  :func:`to_box_frame`), instead of torchvision's integer ``paste_masks_in_image``, whose rounded
  boxes would put a point's answer up to a pixel away from where the loss taught it;
* prediction sets (the paper's "A"): per GT instance, the masks of the proposals that the training
  assignment makes positive for it.

Frames: inputs and outputs are in original image pixels; inside, images are resized and padded by
:mod:`apis.models.transform`, so boxes, proposals and points are in input pixels (original × scale).
A proposal's M×M mask covers its box: cell (i, j) spans ``[x0 + i·w/M, x0 + (i+1)·w/M)`` in x (rows
alike), so with ``grid_sample(align_corners=False)`` a point at input coordinate ``c`` is read at
``M · (c − x0) / w`` cell units.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, box_iou, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from apis.geometry import PixelWindow, omega, pixel_centres, sample_points
from apis.models.backbone import Backbone, build_backbone
from apis.models.condinst import POINT_GROUPS, STAT_PREFIX, CondInstConfig
from apis.models.losses import point_loss
from apis.models.transform import ImageBatch, batch_images, targets_to_input_frame

MASK_POOL = 14  # RoIAlign output of the mask head; its deconvolution doubles it
MASK_SIZE = 2 * MASK_POOL  # M: mask logits per proposal are M×M over the proposal box
POSITIVE_IOU = 0.5  # a proposal is positive for the GT it overlaps best when their IoU reaches this
ROI_LEVELS = ["0", "1", "2", "3"]  # RoIs are pooled from P2–P5, as in torchvision's Mask R-CNN


# ------------------------------------------------------------------------------------ box frames
def to_box_frame(points: Tensor, boxes: Tensor, size: int = MASK_SIZE) -> Tensor:
    """Continuous input-frame points N×P×2 (x, y) → coordinates in cell units of each box's
    ``size``×``size`` mask (boxes N×4 xyxy, input frame). A point lies inside box n when both
    coordinates are in ``[0, size)``; ``size · (c − x0) / w`` is where ``grid_sample`` with
    ``align_corners=False`` reads a map stretched over the box."""
    origin = boxes[:, None, :2]
    extent = (boxes[:, None, 2:] - origin).clamp(min=1e-6)
    return (points - origin) / extent * size


def inside_box_frame(rel: Tensor, size: int = MASK_SIZE) -> Tensor:
    """N×P bool: points (from :func:`to_box_frame`) whose position lies inside the box, the Ω rule
    (``x0 ≤ x < x1``)."""
    return ((rel >= 0) & (rel < size)).all(-1)


def read_masks(logits: Tensor, boxes: Tensor, window: PixelWindow, scale: tuple[float, float]) -> Tensor:
    """Mask probabilities of N proposals at the centres of the original pixels of ``window``.

    ``logits`` N×M×M over each box, ``boxes`` N×4 xyxy input frame, ``scale`` (sx, sy) original →
    input. Logits are read bilinearly (as the point loss reads them) and turned into probabilities;
    pixels whose centres lie outside a proposal's box are 0 for it, as Mask R-CNN's paste-in-box.
    Returns N×window.height×window.width.
    """
    n, m = logits.shape[0], logits.shape[-1]
    ys, xs = pixel_centres(window)
    ys, xs = ys.to(logits.device) * scale[1], xs.to(logits.device) * scale[0]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)[None].expand(n, -1, -1)
    rel = to_box_frame(pts, boxes.to(pts.dtype), m)
    if n == 0 or rel.shape[1] == 0:
        return logits.new_zeros((n, window.height, window.width))
    probs = torch.sigmoid(sample_points(logits, rel, (m, m)))
    return torch.where(inside_box_frame(rel, m), probs, torch.zeros_like(probs)).reshape(n, window.height,
                                                                                         window.width)


# ------------------------------------------------------------------------------------- the parts
class FeaturePyramid(nn.Module):
    """Our backbone (strides 4, 8, 16, 32) under torchvision's FPN, the role torchvision's
    ``BackboneWithFPN`` plays for its own backbones: returns P2–P5 as an OrderedDict ``"0"``–``"3"``
    (plus ``"pool"``, P6, when ``levels`` is 5), each ``out_channels`` wide."""

    def __init__(self, body: Backbone, out_channels: int, levels: int):
        super().__init__()
        if levels not in (4, 5):
            raise ValueError(f"model.rcnn.anchor_sizes: give 4 sizes (P2–P5) or 5 (P2–P6), got {levels}")
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels, out_channels,
                                         extra_blocks=LastLevelMaxPool() if levels == 5 else None)
        self.out_channels = out_channels

    @property
    def weights_source(self) -> str:
        return self.body.weights_source

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(images))))


class PointSupRoIHeads(RoIHeads):
    """torchvision's RoIHeads whose mask loss is chosen per instance (point BCE, mask BCE or none) and
    whose detections carry mask logits rather than probabilities, so that the caller reads them in
    the point loss's frame.

    Targets (input frame): ``boxes`` G×4, ``labels`` G (1-based, 0 is background); optional
    ``point_centres`` G×P×2 with ``point_labels`` G×P (−1 padding); optional ``masks`` G×H×W at the
    *original* size with ``has_mask`` G and ``scale`` (sx, sy).
    ``forward`` returns ``(detections, losses)`` like torchvision's: in training the losses
    ``loss_classifier``, ``loss_box_reg``, ``loss_mask`` (mean BCE over the M×M cells of full-mask
    positives) and ``loss_point`` (mean BCE over labelled points inside positive proposals), both
    unweighted; in evaluation per image ``boxes`` N×4 (input frame), ``labels`` N (1-based),
    ``scores`` N and ``mask_logits`` N×M×M.
    """

    def check_targets(self, targets: list[dict] | None) -> None:
        # torchvision wants a mask for every instance; here each instance has points, a mask or neither.
        if targets is None or not all("boxes" in t and "labels" in t for t in targets):
            raise ValueError("Mask R-CNN training needs targets with boxes and labels for every image")

    def mask_logits(self, features: dict[str, Tensor], boxes: list[Tensor], labels: list[Tensor],
                    image_shapes: list[tuple[int, int]]) -> list[Tensor]:
        """Per image, the N_i×M×M mask logits of class ``labels[i]`` (1-based) over ``boxes[i]``."""
        x = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
        lab = torch.cat(labels)
        x = x[torch.arange(lab.shape[0], device=x.device), lab]
        return list(x.split([b.shape[0] for b in boxes]))

    def forward(self, features, proposals, image_shapes, targets=None, point_stats: bool = False):
        if not self.training:
            return self.detect(features, proposals, image_shapes), {}
        proposals, matched, labels, regression_targets = self.select_training_samples(proposals, targets)
        feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(feats)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        # Masks are learnt on positive proposals only, each from its matched GT instance.
        pos = [torch.where(lab > 0)[0] for lab in labels]
        boxes = [p[i] for p, i in zip(proposals, pos, strict=True)]
        gt = [m[i] for m, i in zip(matched, pos, strict=True)]
        logits = self.mask_logits(features, boxes, [t["labels"][g] for t, g in zip(targets, gt, strict=True)],
                                  image_shapes)
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg,
                    **mask_losses(logits, boxes, gt, targets, point_stats)}

    def detect(self, features, proposals, image_shapes) -> list[dict[str, Tensor]]:
        feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(feats)
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        logits = self.mask_logits(features, boxes, labels, image_shapes)
        return [{"boxes": b, "labels": lab, "scores": s, "mask_logits": z}
                for b, lab, s, z in zip(boxes, labels, scores, logits, strict=True)]


def mask_losses(logits: list[Tensor], boxes: list[Tensor], gt: list[Tensor], targets: list[dict],
                point_stats: bool = False) -> dict[str, Tensor]:
    """``loss_mask`` and ``loss_point`` of the positive proposals of a batch (see
    :class:`PointSupRoIHeads`), and with ``point_stats`` the statistics CondInst gives (see
    :class:`~apis.models.condinst.CondInst`): per point group, the labelled points of the instances that
    got masks and those where the mean of the instance's mask probabilities at the point (0 from a
    proposal whose box does not hold it, as in its prediction set) is on the label's side of 0.5.

    Per image: ``logits`` N×M×M of the GT class, ``boxes`` N×4 proposals (input frame), ``gt`` N
    indices of their matched instances. An instance with a full mask (``has_mask``) is supervised by
    it and its points are ignored; otherwise its labelled points inside each proposal are. Each loss is
    zero, with a gradient path, when nothing supervises it."""
    zero = sum(z.sum() for z in logits) * 0.0
    stats = {f"{STAT_PREFIX}{k}_{g}": zero.new_zeros(()) for k in ("points", "right") for g in POINT_GROUPS}
    mask_terms, point_terms, point_counts = [], [], []
    for z, bx, g, t in zip(logits, boxes, gt, targets, strict=True):
        if z.shape[0] == 0:
            continue
        m = z.shape[-1]
        full = t["has_mask"][g] if "has_mask" in t else torch.zeros_like(g, dtype=torch.bool)
        if bool(full.any()):
            sx, sy = t["scale"]
            # The GT mask's area fraction in each cell, sampled at the original size in our pixel-centre
            # frame (aligned=True), the frame the point loss and the mask reading use.
            rois = torch.cat([g[full, None].to(bx), bx[full] / bx.new_tensor([sx, sy, sx, sy])], 1)
            cells = roi_align(t["masks"][:, None].to(bx), rois, (m, m), spatial_scale=1.0, aligned=True)[:, 0]
            mask_terms.append(F.binary_cross_entropy_with_logits(z[full], cells, reduction="none").flatten())
        if "point_centres" not in t:
            continue
        rel = to_box_frame(t["point_centres"][g].to(bx), bx, m)
        inside = inside_box_frame(rel, m)
        labels = t["point_labels"][g]
        lab = torch.where(inside & ~full[:, None], labels, torch.full_like(labels, -1))
        n = int((lab >= 0).sum())
        if n:
            point_terms.append(point_loss(z, rel, lab, (m, m)) * n)
            point_counts.append(n)
        if point_stats:
            _count_points(stats, z, rel, inside, g, full, t)
    out = {"loss_mask": torch.cat(mask_terms).mean() if mask_terms else zero,
           "loss_point": sum(point_terms) / sum(point_counts) if point_terms else zero}
    return {**out, **stats} if point_stats else out


@torch.no_grad()
def _count_points(stats: dict[str, Tensor], z: Tensor, rel: Tensor, inside: Tensor, g: Tensor, full: Tensor,
                  t: dict) -> None:
    """Add one image's labelled points to ``stats`` (see :func:`mask_losses`). ``z`` N×M×M logits of the
    positive proposals, ``rel`` N×P×2 their instances' points in each box frame, ``inside`` N×P."""
    m = z.shape[-1]
    probs = torch.sigmoid(sample_points(z.detach().float(), rel.float(), (m, m))) * inside
    gts, row = torch.unique(g, return_inverse=True)
    mean = torch.zeros((len(gts), probs.shape[1]), device=probs.device).index_add_(0, row, probs)
    mean /= torch.bincount(row, minlength=len(gts))[:, None]
    labels = t["point_labels"][gts]
    steps = t["point_steps"][gts] if "point_steps" in t else torch.zeros_like(labels)
    by_mask = torch.zeros(len(gts), dtype=torch.bool, device=g.device).index_fill_(0, row[full], True)
    right = (mean > 0.5) == (labels == 1)
    for group, member in zip(POINT_GROUPS, (steps == 0, steps >= 1), strict=True):
        member = member & (labels >= 0) & ~by_mask[:, None]
        stats[f"{STAT_PREFIX}points_{group}"] += member.sum()
        stats[f"{STAT_PREFIX}right_{group}"] += (member & right).sum()


# ------------------------------------------------------------------------------------- the model
class MaskRCNN(nn.Module):
    """Mask R-CNN with the same contract as :class:`apis.models.condinst.CondInst`.

    ``model(images, targets)`` → dict of losses (training): ``loss_objectness``, ``loss_rpn_box_reg``,
    ``loss_classifier``, ``loss_box_reg``, ``loss_mask`` (× ``cfg.mask_loss_weight``) and
    ``loss_point`` (× ``cfg.point_loss_weight``); with ``point_stats=True`` also CondInst's point
    statistics (keys starting with :data:`~apis.models.condinst.STAT_PREFIX`, not losses; see
    :func:`mask_losses`). ``model(images)`` → list of dicts with ``boxes``
    (N×4 xyxy original pixels), ``labels`` (N, 0-based class index), ``scores`` (N) and ``masks``
    (N×1×H×W probabilities at the original size) (evaluation).

    ``images``: list of 3×H×W float tensors in [0, 1] at their original size. ``targets``: one dict per
    image as CondInst takes them (:func:`apis.models.transform.targets_to_input_frame`), labels 0-based.
    ``cfg`` is the model config (:class:`~apis.models.condinst.CondInstConfig`) with
    ``architecture: maskrcnn``; its ``rcnn`` field holds the settings of this model alone.
    """

    def __init__(self, cfg: CondInstConfig, backbone: Backbone | None = None):
        super().__init__()
        if cfg.box_projection_weight > 0 or cfg.pairwise_weight > 0:
            raise ValueError("model.box_projection_weight and model.pairwise_weight are CondInst's BoxInst losses, "
                             "which Mask R-CNN does not have; set them to 0 or use architecture: condinst")
        self.cfg = cfg
        r, c = cfg.rcnn, cfg.fpn_channels
        self.backbone = FeaturePyramid(backbone if backbone is not None else build_backbone(cfg.backbone), c,
                                       len(r.anchor_sizes))
        anchors = AnchorGenerator(tuple((s,) for s in r.anchor_sizes),
                                  (tuple(r.aspect_ratios),) * len(r.anchor_sizes))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(c, anchors.num_anchors_per_location()[0]), fg_iou_thresh=0.7, bg_iou_thresh=0.3,
            batch_size_per_image=r.rpn_batch_size, positive_fraction=0.5,
            pre_nms_top_n={"training": r.rpn_pre_nms_topk, "testing": r.rpn_pre_nms_topk},
            post_nms_top_n={"training": r.rpn_post_nms_topk, "testing": r.rpn_post_nms_topk},
            nms_thresh=r.rpn_nms_thresh,
        )
        classes = cfg.num_classes + 1  # torchvision's class 0 is the background
        self.roi_heads = PointSupRoIHeads(
            box_roi_pool=MultiScaleRoIAlign(ROI_LEVELS, 7, 2),
            box_head=TwoMLPHead(c * 7 * 7, r.box_head_dim),
            box_predictor=FastRCNNPredictor(r.box_head_dim, classes),
            fg_iou_thresh=POSITIVE_IOU, bg_iou_thresh=POSITIVE_IOU, batch_size_per_image=r.roi_batch_size,
            positive_fraction=r.roi_positive_fraction, bbox_reg_weights=None,
            score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_image,
            mask_roi_pool=MultiScaleRoIAlign(ROI_LEVELS, MASK_POOL, 2),
            mask_head=MaskRCNNHeads(c, [r.mask_head_channels] * r.mask_head_convs, 1),
            mask_predictor=MaskRCNNPredictor(r.mask_head_channels, r.mask_head_channels, classes),
        )
        # torchvision's Kaiming init of the mask logits starts them at about ±5 (a point BCE of 6–8 at
        # the first iteration, which then dominates every other loss); start them near 0 as detectron2 does.
        logits = self.roi_heads.mask_predictor.mask_fcn_logits
        nn.init.normal_(logits.weight, std=0.001)
        nn.init.zeros_(logits.bias)

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, images: list[Tensor], targets: list[dict] | None = None, point_stats: bool = False):
        if self.training and targets is None:
            raise ValueError("Mask R-CNN needs targets in training mode")
        batch = self._batch(images)
        features = self.backbone(batch.tensors)
        image_list = ImageList(batch.tensors, batch.sizes)
        if self.training:
            frame_targets = self._frame_targets(targets, batch)
            proposals, rpn_losses = self.rpn(image_list, features, frame_targets)
            _, roi_losses = self.roi_heads(features, proposals, batch.sizes, frame_targets, point_stats)
            roi_losses["loss_mask"] = self.cfg.mask_loss_weight * roi_losses["loss_mask"]
            roi_losses["loss_point"] = self.cfg.point_loss_weight * roi_losses["loss_point"]
            return {**rpn_losses, **roi_losses}
        proposals, _ = self.rpn(image_list, features)
        # The config is the source of truth (callers may change it after construction).
        heads = self.roi_heads
        heads.score_thresh, heads.nms_thresh = self.cfg.score_thresh, self.cfg.nms_thresh
        heads.detections_per_img = self.cfg.detections_per_image
        detections, _ = heads(features, proposals, batch.sizes)
        return [self._to_original(d, batch, b) for b, d in enumerate(detections)]

    def _batch(self, images: list[Tensor], min_size: int | None = None) -> ImageBatch:
        if min_size is None:
            sizes = self.cfg.train_min_sizes
            # Multi-scale training draws from torch's generator, which the trainer seeds per iteration.
            min_size = sizes[int(torch.randint(len(sizes), (1,)))] if self.training else self.cfg.test_min_size
        return batch_images(images, min_size, self.cfg.max_size)

    @staticmethod
    def _frame_targets(targets: list[dict], batch: ImageBatch) -> list[dict]:
        """Targets in the input frame with torchvision's 1-based labels; full masks stay at the original
        size (the mask loss samples them there) with the image's ``scale`` alongside."""
        stripped = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
        out = []
        for t, ft, scale in zip(targets, targets_to_input_frame(stripped, batch, 1), batch.scales, strict=True):
            ft["labels"] = t["labels"].long() + 1
            ft["scale"] = scale
            if "masks" in t and t.get("has_mask") is not None and bool(t["has_mask"].any()):
                ft["masks"] = t["masks"]
            else:
                ft.pop("has_mask", None)
            out.append(ft)
        return out

    def _to_original(self, det: dict[str, Tensor], batch: ImageBatch, b: int) -> dict[str, Tensor]:
        (oh, ow), (sx, sy) = batch.original_sizes[b], batch.scales[b]
        boxes = det["boxes"]
        masks = boxes.new_zeros((boxes.shape[0], 1, oh, ow))
        for n in range(boxes.shape[0]):
            orig = boxes[n] / boxes.new_tensor([sx, sy, sx, sy])
            win = omega(tuple(orig.tolist()), ow, oh)
            masks[n, 0, win.y0:win.y1, win.x0:win.x1] = read_masks(det["mask_logits"][n:n + 1], boxes[n:n + 1],
                                                                    win, (sx, sy))[0]
        return {"boxes": boxes / boxes.new_tensor([sx, sy, sx, sy]), "labels": det["labels"] - 1,
                "scores": det["scores"], "masks": masks}

    # ------------------------------------------------------------------------------- prediction sets
    @torch.no_grad()
    def prediction_sets(self, images: list[Tensor], targets: list[dict], min_size: int | None = None,
                        crop_first: bool = True) -> list[list[Tensor]]:
        """Multiple-proposal prediction sets (the paper's "A" for a two-stage model).

        For every GT instance (``targets[b]["boxes"]`` G×4 xyxy original pixels, ``labels`` G 0-based),
        the masks of the proposals that the training assignment makes positive for it: the RPN's test
        proposals plus the GT box itself (as torchvision adds it in training), matched to the GT it
        overlaps best when that IoU is ≥ 0.5. The ``cfg.topk_per_instance`` of highest IoU are kept,
        in that order (the GT box first). Each mask is read at the pixel centres of the instance's Ω
        (``targets[b]["windows"]``, else :func:`apis.geometry.omega` of the box). Returns, per image, per
        instance, a K×h×w float tensor of probabilities on the CPU; K ≥ 1 except for an instance whose
        box duplicates another's. ``crop_first=False`` reads whole-image maps and then crops (same
        values; for tests).
        """
        was_training = self.training
        self.eval()
        try:
            batch = self._batch(images, min_size if min_size is not None else self.cfg.test_min_size)
            features = self.backbone(batch.tensors)
            proposals, _ = self.rpn(ImageList(batch.tensors, batch.sizes), features)
            chosen_boxes, chosen_labels, chosen_gt = [], [], []
            for b, t in enumerate(targets):
                sx, sy = batch.scales[b]
                gt_boxes = t["boxes"].float().to(proposals[b].device) * proposals[b].new_tensor([sx, sy, sx, sy])
                gt_labels = t["labels"].long().to(gt_boxes.device) + 1
                cand = torch.cat([proposals[b], gt_boxes])
                matched, labels = self.roi_heads.assign_targets_to_proposals([cand], [gt_boxes], [gt_labels])
                matched, pos = matched[0], labels[0] > 0
                iou = box_iou(cand, gt_boxes) if gt_boxes.numel() else cand.new_zeros((cand.shape[0], 0))
                keep = []
                for g in range(gt_boxes.shape[0]):
                    idx = torch.where(pos & (matched == g))[0]
                    order = torch.sort(iou[idx, g], descending=True, stable=True).indices
                    keep.append(idx[order[: self.cfg.topk_per_instance]])
                keep_idx = torch.cat(keep) if keep else matched.new_zeros(0)
                chosen_boxes.append(cand[keep_idx])
                chosen_gt.append(matched[keep_idx])
                chosen_labels.append(gt_labels[matched[keep_idx]])
            logits = self.roi_heads.mask_logits(features, chosen_boxes, chosen_labels, batch.sizes)
            out = []
            for b, t in enumerate(targets):
                oh, ow = batch.original_sizes[b]
                windows = t.get("windows") or [omega(tuple(bx.tolist()), ow, oh) for bx in t["boxes"]]
                sets = []
                for g, win in enumerate(windows):
                    sel = chosen_gt[b] == g
                    z, bx = logits[b][sel], chosen_boxes[b][sel]
                    if crop_first:
                        maps = read_masks(z, bx, win, batch.scales[b])
                    else:
                        full = read_masks(z, bx, PixelWindow(0, 0, ow, oh), batch.scales[b])
                        maps = full[:, win.y0:win.y1, win.x0:win.x1].contiguous()
                    sets.append(maps.float().cpu())
                out.append(sets)
            return out
        finally:
            self.train(was_training)
