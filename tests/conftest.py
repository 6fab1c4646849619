"""Shared fixtures: a small synthetic dataset, a tiny, fast model configuration, and a headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from apis.data.coco import load_coco
from apis.data.synthetic import SyntheticConfig, generate
from apis.models.backbone import BackboneConfig
from apis.models.condinst import CondInstConfig


def tiny_model_config(num_classes: int = 6, size: int = 64) -> CondInstConfig:
    """A model small enough to train a few iterations in seconds on 2 CPU cores."""
    return CondInstConfig(
        num_classes=num_classes, backbone=BackboneConfig("efficientnet_lite0", pretrained=False),
        fpn_channels=16, head_convs=1, mask_branch_channels=16, mask_branch_convs=1,
        train_min_sizes=(size,), test_min_size=size, max_size=4 * size,
    )


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions gain nothing from threads, and on a CPU shared with another job the intra-op
    thread pool spins: one thread runs these tests many times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("synthetic")
    return generate(out, SyntheticConfig(seed=3, image_size=64, train_images=6, val_images=4, max_instances=3))


@pytest.fixture(scope="session")
def small_train(small_synthetic):
    return load_coco(small_synthetic["train"])


@pytest.fixture(scope="session")
def small_val(small_synthetic):
    return load_coco(small_synthetic["val"])


# Debian's chromium, driven by Playwright (`playwright install` cannot download a browser here).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
