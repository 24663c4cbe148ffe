"""Segmentation heads on ViT feature maps, and the frozen-encoder model that joins them.

Two heads, as in DermINO section 4.2.3:

* ``LinearHead``: BatchNorm -> Dropout2d(0.1) -> 1x1 conv on the last block's patch tokens,
  logits upsampled bilinearly to the input size. It measures how linearly separable the
  lesion is in the dense features, with almost no capacity of its own.
* ``UperNetHead``: a ViT has a single stride, so four evenly spaced blocks are first resampled
  to four scales (x4, x2, x1, x0.5: the usual "simple pyramid" of ViT UperNet), then a pyramid
  pooling module on the coarsest level and an FPN merge them.

Heads take ``features``: a list of ``(B, D, h, w)`` maps (what
``ViTBackbone.get_intermediate_layers`` returns) and ``out_size`` (H, W) of the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_act(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LinearHead(nn.Module):
    """BN + Dropout2d + 1x1 conv on the last feature map."""

    def __init__(self, in_dim: int, num_classes: int = 2, dropout: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_dim, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        x = self.classifier(self.dropout(self.bn(features[-1])))
        return F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)


class _Rescale(nn.Module):
    """Resample a stride-p ViT map by ``factor`` in {4, 2, 1, 0.5} (learned up, max-pooled down)."""

    def __init__(self, dim: int, factor: float):
        super().__init__()
        if factor == 4:
            self.op = nn.Sequential(
                nn.ConvTranspose2d(dim, dim, 2, stride=2), nn.BatchNorm2d(dim), nn.GELU(),
                nn.ConvTranspose2d(dim, dim, 2, stride=2),
            )
        elif factor == 2:
            self.op = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        elif factor == 1:
            self.op = nn.Identity()
        elif factor == 0.5:
            self.op = nn.MaxPool2d(2, ceil_mode=True)  # ceil: a 1-wide map stays 1 wide
        else:
            raise ValueError(f"unsupported scale factor {factor}; use 4, 2, 1 or 0.5")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class PyramidPooling(nn.Module):
    """Context at several grid sizes (1, 2, 3, 6), upsampled back and concatenated."""

    def __init__(self, cin: int, channels: int, scales: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv_bn_act(cin, channels, 1)) for s in scales
        )
        self.bottleneck = _conv_bn_act(cin + len(scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(st(x), size=size, mode="bilinear", align_corners=False) for st in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UperNetHead(nn.Module):
    """Simple ViT pyramid (x4, x2, x1, x0.5) + PPM + FPN + fuse + 1x1 classifier."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int = 2,
        channels: int = 64,
        scales: Sequence[float] = (4, 2, 1, 0.5),
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ):
        super().__init__()
        self.rescale = nn.ModuleList(_Rescale(in_dim, f) for f in scales)
        n = len(scales)
        self.ppm = PyramidPooling(in_dim, channels, pool_scales)
        self.lateral = nn.ModuleList(_conv_bn_act(in_dim, channels, 1) for _ in range(n - 1))
        self.fpn = nn.ModuleList(_conv_bn_act(channels, channels, 3) for _ in range(n - 1))
        self.fuse = _conv_bn_act(n * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        if len(features) != len(self.rescale):
            raise ValueError(f"UperNetHead expects {len(self.rescale)} feature maps, got {len(features)}")
        pyramid = [op(f) for op, f in zip(self.rescale, features, strict=True)]  # fine -> coarse
        laterals = [lat(p) for lat, p in zip(self.lateral, pyramid[:-1], strict=True)]
        laterals.append(self.ppm(pyramid[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: add the coarser level
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="bilinear", align_corners=False
            )
        outs = [conv(x) for conv, x in zip(self.fpn, laterals[:-1], strict=True)] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        x = self.classifier(self.dropout(self.fuse(torch.cat(outs, dim=1))))
        return F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)


def backbone_depth(backbone: nn.Module) -> int:
    """Number of transformer blocks (dermino ViTs and anything exposing ``vit.blocks``/``blocks``)."""
    for owner in (getattr(backbone, "vit", None), backbone):
        blocks = getattr(owner, "blocks", None)
        if blocks is not None:
            return len(blocks)
    depth = getattr(getattr(backbone, "spec", None), "depth", None)
    if depth is None:
        raise ValueError(f"cannot tell the depth of backbone {type(backbone).__name__}; set 'layers'")
    return int(depth)


def default_layers(head: str, depth: int) -> list[int]:
    """Last block for the linear head; four evenly spaced blocks ending at the last for UperNet."""
    if head == "linear":
        return [depth - 1]
    return [max(0, (k + 1) * depth // 4 - 1) for k in range(4)]


def build_head(head: str, in_dim: int, num_classes: int = 2, dropout: float = 0.1, channels: int = 64) -> nn.Module:
    """A head by name; BatchNorm becomes SyncBatchNorm when running distributed."""
    if head == "linear":
        module: nn.Module = LinearHead(in_dim, num_classes, dropout)
    elif head == "upernet":
        module = UperNetHead(in_dim, num_classes, channels=channels, dropout=dropout)
    else:
        raise ValueError(f"unknown head {head!r}; use 'linear' or 'upernet'")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


class SegmentationModel(nn.Module):
    """Backbone + head. Frozen by default: no gradients, eval mode, features under no_grad."""

    def __init__(self, backbone: nn.Module, head: nn.Module, layers: Sequence[int], finetune: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.layers = list(layers)
        self.finetune = finetune
        if not finetune:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if not self.finetune:
            self.backbone.eval()  # a frozen encoder keeps its eval behaviour (dropout, drop-path off)
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.finetune:
            return self.backbone.get_intermediate_layers(x, self.layers)
        with torch.no_grad():
            return [f.detach() for f in self.backbone.get_intermediate_layers(x, self.layers)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), x.shape[-2:])


def build_segmentation_model(cfg, backbone_state: dict | None = None) -> SegmentationModel:
    """Backbone from the registry (``cfg.weights`` or ``backbone_state``) + the configured head.

    ``cfg`` is a ``SegmentConfig``. ``backbone_state`` (saved in run checkpoints when the
    backbone was fine-tuned or randomly initialised) replaces the weights file.
    """
    from dermino.models import create

    weights = None if backbone_state is not None else cfg.weights
    backbone = create(cfg.backbone, weights=weights, **cfg.backbone_overrides)
    if backbone_state is not None:
        backbone.load_state_dict(backbone_state)
    layers = list(cfg.layers) or default_layers(cfg.head, backbone_depth(backbone))
    if cfg.head == "upernet" and len(layers) != 4:
        raise ValueError(f"the upernet head needs 4 backbone layers, got layers={layers}")
    head = build_head(cfg.head, backbone.embed_dim, 2, cfg.dropout, cfg.upernet_channels)
    return SegmentationModel(backbone, head, layers, finetune=cfg.finetune_backbone)
