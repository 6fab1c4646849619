"""Instance-segmentation models with one contract (see :class:`apis.models.condinst.CondInst`):
training ``model(images, targets)`` → losses; evaluation ``model(images)`` → detections with masks;
``model.prediction_sets(images, targets)`` → per instance the K×h×w maps selection scores."""

from __future__ import annotations

from torch import nn

from apis.models.condinst import ARCHITECTURES, CondInst, CondInstConfig
from apis.models.maskrcnn import MaskRCNN


def build_model(cfg: CondInstConfig) -> nn.Module:
    """The model ``cfg.architecture`` names, built from ``cfg`` (random heads; the backbone's pretrained
    weights as ``cfg.backbone`` says)."""
    if cfg.architecture == "condinst":
        return CondInst(cfg)
    if cfg.architecture == "maskrcnn":
        return MaskRCNN(cfg)
    raise ValueError(f"model.architecture {cfg.architecture!r} is not built; choose one of {', '.join(ARCHITECTURES)}")
