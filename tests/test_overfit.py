"""A tiny CondInst must overfit a 4-image dataset from labelled points alone."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from conftest import tiny_model_config

from apis.data.coco import load_coco
from apis.data.loader import TrainingSet, category_index, image_tensor, make_target
from apis.data.synthetic import SyntheticConfig, generate
from apis.evaluate import evaluate
from apis.geometry import omega
from apis.models.backbone import BackboneConfig
from apis.models.condinst import CondInst
from apis.oracle import MaskOracle, initial_answers
from apis.selection.uncertainty import mean_probability
from apis.train import Schedule, train


@pytest.mark.slow
def test_tiny_model_overfits_four_images_from_points(tmp_path):
    t0 = time.time()
    paths = generate(tmp_path / "data", SyntheticConfig(seed=11, image_size=64, train_images=4, val_images=1,
                                                        max_instances=2))
    ds = load_coco(paths["train"])
    points: dict[int, list[tuple[int, int, int]]] = {}
    for a in initial_answers(ds, MaskOracle(ds), seed=0, k=25):
        points.setdefault(a.instance_id, []).append((a.x, a.y, a.label))
    cfg = dataclasses.replace(tiny_model_config(len(ds.categories), 64),
                              backbone=BackboneConfig("efficientnet_lite0", pretrained=True),
                              fpn_channels=32, mask_branch_channels=32, head_convs=2)
    torch.manual_seed(0)
    model = CondInst(cfg)
    schedule = Schedule(iterations=250, batch_size=4, optimizer="adamw", lr=2e-3, weight_decay=0.0,
                        warmup_iters=20, decay_at=(200,), checkpoint_every=1000, log_every=50)
    train(model, TrainingSet(ds, points=points), schedule, tmp_path / "run", seed=0)

    # Point accuracy: the mean of each instance's prediction set read at its labelled pixels.
    classes = category_index(ds)
    right = total = 0
    for im in ds.images:
        target = make_target(im, classes)
        sets = model.prediction_sets([image_tensor(ds, im)], [target])[0]
        for inst, probs in zip(im.pool, sets, strict=True):
            win = omega(inst.box, im.width, im.height)
            pbar = mean_probability(probs) if probs.shape[0] else None
            for x, y, label in points[inst.id]:
                predicted = pbar is not None and bool(pbar[y - win.y0, x - win.x0] > 0.5)
                right += predicted == bool(label)
                total += 1
    accuracy = right / total
    ap = evaluate(model, ds, batch_size=4).segm["AP"]
    assert accuracy >= 0.95, f"point accuracy {accuracy:.3f}"
    assert ap >= 50.0, f"mask AP {ap:.1f} on the training images"
    assert time.time() - t0 < 120

