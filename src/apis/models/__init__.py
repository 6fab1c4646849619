"""Instance-segmentation models with one contract (see :class:`apis.models.condinst.CondInst`):
training ``model(images, targets)`` → losses; evaluation ``model(images)`` → detections with masks;
``model.prediction_sets(images, targets)`` → per instance the K×h×w maps selection scores."""

from __future__ import annotations

import dataclasses

from torch import nn

from apis.data.records import CocoDataset
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


def model_config_for(cfg: CondInstConfig, dataset: CocoDataset) -> CondInstConfig:
    """``cfg`` fitted to the training set: its number of categories and, with ``cfg.max_test_upscale`` > 1, a test
    size at which its median box reaches :data:`apis.data.sizes.MIN_OBJECT_PIXELS` across
    (:func:`apis.data.sizes.fitted_test_size`; the training sizes stay). The model keeps the result in its
    checkpoint, so evaluation, selection and export all see the objects at that size."""
    from apis.data.sizes import box_objects, fitted_test_size

    test, max_size = fitted_test_size(box_objects(dataset), cfg.test_min_size, cfg.max_size, cfg.max_test_upscale)
    return dataclasses.replace(cfg, num_classes=len(dataset.categories), test_min_size=test, max_size=max_size)
