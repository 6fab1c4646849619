"""Backbones: offline pretrained weights, loud failures on bad files, frozen batch norm, normalisation."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

from apis.models.backbone import (
    BackboneConfig,
    WeightsError,
    build_backbone,
    lite0_package_weights,
    resnet_cache_path,
)

LITE0_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")  # in the package file, not in the features model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lite0_package_state() -> dict[str, torch.Tensor]:
    return torch.load(lite0_package_weights(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch home; torch.hub.get_dir() points inside it."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # undo any earlier torch.hub.set_dir
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home


# ------------------------------------------------------------------------------------ Lite0 weights
def test_lite0_package_weights_load_every_tensor(lite0_package_state, no_downloads) -> None:
    backbone = build_backbone(BackboneConfig(name="efficientnet_lite0", pretrained=True))
    assert backbone.weights_source == str(lite0_package_weights())

    # The design's mapping, computed here independently: package tensors pairwise onto timm's full model.
    full_keys = list(timm.create_model("tf_efficientnet_lite0").state_dict())
    assert len(full_keys) == len(lite0_package_state) == 296
    mapped = dict(zip(full_keys, lite0_package_state.values(), strict=True))
    loaded = backbone.body.state_dict()
    assert set(loaded) <= set(mapped)
    for key, value in loaded.items():
        assert value.shape == mapped[key].shape, key
        assert torch.equal(value, mapped[key]), key
    # Every package tensor is used, except the classifier head and BN batch counters.
    unused = set(mapped) - set(loaded)
    assert all(k.endswith("num_batches_tracked") or k.startswith(LITE0_HEAD_PREFIXES) for k in unused), unused

    # Spot-check the positional mapping against the names of both conventions.
    for pkg_key, timm_key in [
        ("_conv_stem.weight", "conv_stem.weight"),
        ("_bn0.running_var", "bn1.running_var"),
        ("_blocks.15._expand_conv.weight", "blocks.6.0.conv_pw.weight"),
        ("_blocks.15._bn2.running_mean", "blocks.6.0.bn3.running_mean"),
        ("_blocks.15._project_conv.weight", "blocks.6.0.conv_pwl.weight"),
    ]:
        assert torch.equal(loaded[timm_key], lite0_package_state[pkg_key]), (pkg_key, timm_key)

    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.rand(2, 3, 96, 128))
    _check_feature_maps(backbone, feats, (96, 128), {8: 40, 16: 112, 32: 320})


def _check_feature_maps(backbone, feats: list[torch.Tensor], size: tuple[int, int],
                        wanted: dict[int, int]) -> None:
    """Every map has the stride and channels the backbone reports; ``wanted`` stride → channels are there."""
    assert len(feats) == len(backbone.strides) == len(backbone.out_channels)
    for f, s, c in zip(feats, backbone.strides, backbone.out_channels, strict=True):
        assert tuple(f.shape) == (f.shape[0], c, size[0] // s, size[1] // s), s
        assert torch.isfinite(f).all()
    by_stride = dict(zip(backbone.strides, backbone.out_channels, strict=True))
    assert {s: by_stride.get(s) for s in wanted} == wanted
    assert backbone.strides[-3:] == [8, 16, 32]  # the FPN's P3–P5


# ------------------------------------------------------------------------------- bad weights files
def _bad_files(tmp_path: Path, good: dict[str, torch.Tensor], wrong_key: str) -> dict[str, tuple[Path, str]]:
    """name → (path, text the error must contain besides the path)."""
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file \x00\x01\x02" * 10)
    not_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_dict)
    wrong = dict(good)
    wrong[wrong_key] = torch.zeros(*good[wrong_key].shape[:-1], good[wrong_key].shape[-1] + 1)
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save(wrong, wrong_shape)
    return {
        "missing": (tmp_path / "does_not_exist.pth", "not found"),
        "garbage": (garbage, "cannot read"),
        "not a state dict": (not_dict, "state dict"),
        "wrong shape": (wrong_shape, repr(wrong_key)),
    }


@pytest.mark.parametrize("case", ["missing", "garbage", "not a state dict", "wrong shape"])
def test_lite0_bad_weights_file_names_the_file(tmp_path, lite0_package_state, no_downloads, case) -> None:
    path, detail = _bad_files(tmp_path, lite0_package_state, "_blocks.3._depthwise_conv.weight")[case]
    with pytest.raises(WeightsError) as err:
        build_backbone(BackboneConfig(name="efficientnet_lite0", weights=str(path)))
    assert str(path) in str(err.value)
    assert detail in str(err.value)


def test_lite0_file_with_a_tensor_too_few_is_refused(tmp_path, lite0_package_state) -> None:
    short = dict(lite0_package_state)
    short.pop("_fc.bias")
    path = tmp_path / "short.pth"
    torch.save(short, path)
    with pytest.raises(WeightsError, match="expected 296 tensors") as err:
        build_backbone(BackboneConfig(name="efficientnet_lite0", weights=str(path)))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("case", ["missing", "garbage", "not a state dict", "wrong shape"])
def test_resnet18_bad_weights_file_names_the_file(tmp_path, resnet18_state, no_downloads, case) -> None:
    path, detail = _bad_files(tmp_path, resnet18_state, "layer2.0.conv1.weight")[case]
    if case == "missing":
        detail = "never downloads"
    with pytest.raises(WeightsError) as err:
        build_backbone(BackboneConfig(name="resnet18", weights=str(path)))
    assert str(path) in str(err.value)
    assert detail in str(err.value)


def test_resnet18_missing_and_unexpected_tensors_are_named(tmp_path, resnet18_state) -> None:
    missing = dict(resnet18_state)
    missing.pop("layer3.1.bn2.running_var")
    extra = dict(resnet18_state, **{"head.weight": torch.zeros(2)})
    for name, sd, key in [("missing", missing, "layer3.1.bn2.running_var"), ("extra", extra, "head.weight")]:
        path = tmp_path / f"{name}.pth"
        torch.save(sd, path)
        with pytest.raises(WeightsError) as err:
            build_backbone(BackboneConfig(name="resnet18", weights=str(path)))
        assert str(path) in str(err.value) and repr(key) in str(err.value)


# --------------------------------------------------------------------------------- ResNet offline
def test_resnet18_pretrained_without_cached_file_refuses_and_never_downloads(empty_hub, no_downloads) -> None:
    looked_for = empty_hub / "hub" / "checkpoints" / Path(
        torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
    assert resnet_cache_path("resnet18") == looked_for
    with pytest.raises(WeightsError) as err:
        build_backbone(BackboneConfig(name="resnet18", pretrained=True))
    assert str(looked_for) in str(err.value)
    assert "never downloads" in str(err.value)
    assert list(empty_hub.rglob("*")) == []  # nothing was fetched or created


def test_resnet18_weights_file_loads_and_is_reported(tmp_path, resnet18_state, no_downloads) -> None:
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state, path)  # as saved from torchvision: includes num_batches_tracked
    backbone = build_backbone(BackboneConfig(name="resnet18", weights=str(path)))
    assert backbone.weights_source == str(path)
    loaded = backbone.body.state_dict()
    for key, value in resnet18_state.items():
        if key.endswith("num_batches_tracked") or key.startswith("fc."):
            continue
        assert torch.equal(loaded[key], value), key
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.rand(1, 3, 64, 96))
    _check_feature_maps(backbone, feats, (64, 96), {8: 128, 16: 256, 32: 512})


def test_resnet18_weights_from_hub_cache_are_used(empty_hub, resnet18_state, no_downloads) -> None:
    cached = resnet_cache_path("resnet18")
    cached.parent.mkdir(parents=True)
    torch.save(resnet18_state, cached)
    backbone = build_backbone(BackboneConfig(name="resnet18", pretrained=True))
    assert backbone.weights_source == str(cached)
    assert torch.equal(backbone.body.state_dict()["conv1.weight"], resnet18_state["conv1.weight"])


def test_random_initialisation_is_reported() -> None:
    assert build_backbone(BackboneConfig(pretrained=False)).weights_source == "random initialisation"
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone(BackboneConfig(name="vgg11", pretrained=False))


# ------------------------------------------------------------------------ frozen BN and freeze_at
@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_batch_norm_is_frozen(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(name=name, pretrained=False))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
    assert list(backbone.buffers())  # frozen BN keeps its statistics as buffers
    before = {k: v.clone() for k, v in backbone.named_buffers()}
    backbone.train()
    backbone(torch.rand(2, 3, 32, 32) * 3.0 + 1.0)  # batch statistics far from the stored ones
    after = dict(backbone.named_buffers())
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    # Batch-norm affine terms are buffers, not trainable parameters.
    norms = [m for m in backbone.modules() if "BatchNorm" in type(m).__name__]
    assert norms
    assert not any(list(m.parameters(recurse=False)) for m in norms)


def _grads_after_backward(backbone: nn.Module) -> dict[str, bool]:
    backbone.train()
    feats = backbone(torch.rand(1, 3, 32, 32))
    sum(f.sum() for f in feats).backward()
    return {k: p.grad is not None for k, p in backbone.body.named_parameters()}


def test_freeze_at_2_lite0() -> None:
    backbone = build_backbone(BackboneConfig(name="efficientnet_lite0", pretrained=False, freeze_at=2))
    body = backbone.body
    frozen = [body.conv_stem, body.bn1, body.blocks[0], body.blocks[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in list(body.blocks)[2:] for p in m.parameters())
    grads = _grads_after_backward(backbone)
    assert not any(v for k, v in grads.items() if k.startswith(("conv_stem.", "blocks.0.", "blocks.1.")))
    assert all(v for k, v in grads.items() if k.startswith(("blocks.2.", "blocks.3.", "blocks.4.")))


def test_freeze_at_2_resnet18() -> None:
    backbone = build_backbone(BackboneConfig(name="resnet18", pretrained=False, freeze_at=2))
    grads = _grads_after_backward(backbone)
    assert grads  # some parameters
    assert not any(v for k, v in grads.items() if k.startswith(("conv1.", "layer1.")))
    assert all(v for k, v in grads.items() if k.startswith(("layer2.", "layer3.", "layer4.")))
    free = build_backbone(BackboneConfig(name="resnet18", pretrained=False, freeze_at=0))
    assert all(p.requires_grad for p in free.parameters())


# ------------------------------------------------------------------------------------ normalisation
class _Recorder(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.seen = x
        return [x]


@pytest.mark.parametrize(
    ("name", "mean", "std"),
    [
        ("efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ("resnet18", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ],
)
def test_normalisation_belongs_to_the_weights(name, mean, std) -> None:
    backbone = build_backbone(BackboneConfig(name=name, pretrained=False))
    backbone.body = _Recorder()
    images = torch.rand(2, 3, 8, 10)
    backbone(images)
    for c in range(3):
        expected = (images[:, c] - mean[c]) / std[c]
        torch.testing.assert_close(backbone.body.seen[:, c], expected, rtol=1e-6, atol=1e-6)
    if name == "efficientnet_lite0":  # [0, 1] maps onto [-1, 1]
        backbone(torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)]))
        assert torch.equal(backbone.body.seen[0], -torch.ones(3, 2, 2))
        assert torch.equal(backbone.body.seen[1], torch.ones(3, 2, 2))
