"""Other backbones in the same registry and with the same API, for comparisons.

* ``dinov2_vit{s,b,l}14`` (+ ``_reg4``): our ViTBackbone at DINOv2 sizes; pass the official
  checkpoint file as ``weights=`` (``dermino.models.weights.load_dinov2_hub`` downloads it).
* ``timm:<model_name>``: any timm model; pooled features as ``cls``, spatial tokens as ``patch``.
* ``resnet50`` / ``resnext50_32x4d``: torchvision CNNs; pooled features and the last feature map.
* ``open_clip:<arch>``: the image tower, registered only when open_clip is importable.

Every wrapper has ``forward_features(x, masks=None) -> {"cls", "patch"}``, ``forward(x)``,
``get_intermediate_layers``, ``embed_dim``, ``patch_size`` (None for CNNs), ``mean``, ``std``
and ``load_checkpoint(state_dict) -> (missing, unexpected, ignored)`` used by load_weights.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import timm
import torch
from torch import Tensor, nn

from dermino.data.normalisation import IMAGENET_MEAN, IMAGENET_STD
from dermino.models.backbone import ViTBackbone, ViTSpec
from dermino.models.registry import register, register_prefix

DINOV2_SIZES = {
    "s": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "b": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "l": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}
_VIT_TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}


def _dinov2_factory(size: str, registers: int):
    def make(**overrides) -> ViTBackbone:
        args = {**DINOV2_SIZES[size], "num_register_tokens": registers, "layerscale_init": 1e-5, **overrides}
        return ViTBackbone(ViTSpec(**args))

    return make


for _s in DINOV2_SIZES:
    register(f"dinov2_vit{_s}14", tiny=_VIT_TINY)(_dinov2_factory(_s, 0))
    register(f"dinov2_vit{_s}14_reg4", tiny=_VIT_TINY)(_dinov2_factory(_s, 4))


def _no_masks(masks: Tensor | None, name: str) -> None:
    if masks is not None:
        raise ValueError(f"{name} has no mask token: masked inputs are only for dermino ViTs")


def _load_plain(module: nn.Module, sd: dict[str, Tensor], drop: Sequence[str]) -> tuple[list, list, list]:
    ignored = [k for k in sd if k.startswith(tuple(drop))]
    result = module.load_state_dict({k: v for k, v in sd.items() if k not in ignored}, strict=False)
    return list(result.missing_keys), list(result.unexpected_keys), ignored


class TimmBackbone(nn.Module):
    """Any timm model behind the dermino API (no classifier: ``num_classes=0``)."""

    def __init__(self, model_name: str, **kwargs):
        super().__init__()
        if not model_name:
            raise ValueError("timm backbone needs a model name, e.g. 'timm:vit_small_patch16_224'")
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        self.name = model_name
        self.embed_dim = self.model.num_features
        cfg = self.model.pretrained_cfg or {}
        self.mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(cfg.get("std", IMAGENET_STD))
        pe = getattr(self.model, "patch_embed", None)
        ps = getattr(pe, "patch_size", None)
        self.patch_size = (ps[0] if isinstance(ps, tuple) else ps) if ps is not None else None
        self.num_prefix_tokens = getattr(self.model, "num_prefix_tokens", 0)

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        _no_masks(masks, f"timm:{self.name}")
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        if feats.ndim == 4:  # CNN: (B, C, H, W), or NHWC for some families
            patch = (
                feats.flatten(2).transpose(1, 2) if feats.shape[1] == self.embed_dim else feats.flatten(1, 2)
            )
        elif feats.ndim == 3:  # transformer tokens
            patch = feats[:, self.num_prefix_tokens :]
        else:
            patch = pooled[:, None]
        return {"cls": pooled, "patch": patch}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        if not hasattr(self.model, "forward_intermediates"):
            raise NotImplementedError(f"timm model {self.name} has no forward_intermediates")
        return list(self.model.forward_intermediates(x, indices=list(indices), intermediates_only=True))

    def load_checkpoint(self, sd: dict[str, Tensor]) -> tuple[list, list, list]:
        return _load_plain(self.model, sd, ("head.", "fc.", "classifier."))


@register_prefix("timm")
def _timm(model_name: str, **kwargs) -> TimmBackbone:
    return TimmBackbone(model_name, **kwargs)


class TorchvisionResNet(nn.Module):
    """torchvision ResNet / ResNeXt trunk: ``cls`` = global average pool, ``patch`` = last map tokens."""

    def __init__(self, arch: str):
        super().__init__()
        import torchvision

        self.net = getattr(torchvision.models, arch)(weights=None)
        self.net.fc = nn.Identity()
        self.name = arch
        self.embed_dim = 2048
        self.patch_size = None
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def _maps(self, x: Tensor) -> list[Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        maps = []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            x = layer(x)
            maps.append(x)
        return maps

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        _no_masks(masks, self.name)
        fmap = self._maps(x)[-1]
        return {"cls": fmap.mean(dim=(2, 3)), "patch": fmap.flatten(2).transpose(1, 2)}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        """Outputs of stages layer1..layer4 (indices 0-3, negatives allowed)."""
        maps = self._maps(x)
        return [maps[i] for i in indices]

    def load_checkpoint(self, sd: dict[str, Tensor]) -> tuple[list, list, list]:
        return _load_plain(self.net, sd, ("fc.",))


for _arch in ("resnet50", "resnext50_32x4d"):
    register(_arch)(lambda _a=_arch, **kw: TorchvisionResNet(_a, **kw))


class OpenCLIPVisual(nn.Module):
    """open_clip image tower; ``weights`` for open_clip are given to create_model as ``pretrained``."""

    def __init__(self, arch: str, pretrained: str | None = None):
        super().__init__()
        import open_clip

        clip = open_clip.create_model(arch, pretrained=pretrained)
        self.visual = clip.visual
        self.name = arch
        self.embed_dim = int(getattr(self.visual, "output_dim", 0) or clip.text_projection.shape[-1])
        self.mean = tuple(getattr(self.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(getattr(self.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        ps = getattr(self.visual, "patch_size", None)
        self.patch_size = (ps[0] if isinstance(ps, tuple) else ps) if ps is not None else None
        if hasattr(self.visual, "output_tokens"):
            self.visual.output_tokens = True

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        _no_masks(masks, f"open_clip:{self.name}")
        out = self.visual(x)
        pooled, tokens = out if isinstance(out, tuple) else (out, out[:, None])
        return {"cls": pooled, "patch": tokens}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        raise NotImplementedError("open_clip towers expose no intermediate layers here")

    def load_checkpoint(self, sd: dict[str, Tensor]) -> tuple[list, list, list]:
        """A whole CLIP state dict (keep its ``visual.*`` part) or the image tower's own."""
        if any(k.startswith("visual.") for k in sd):
            text_side = [k for k in sd if not k.startswith("visual.")]
            sd = {k.removeprefix("visual."): v for k, v in sd.items() if k.startswith("visual.")}
            missing, unexpected, _ = _load_plain(self.visual, sd, ())
            return missing, unexpected, text_side
        return _load_plain(self.visual, sd, ())


if importlib.util.find_spec("open_clip") is not None:

    @register_prefix("open_clip")
    def _open_clip(arch: str, pretrained: str | None = None) -> OpenCLIPVisual:
        return OpenCLIPVisual(arch, pretrained)


@torch.no_grad()
def feature_shapes(model: nn.Module, img_size: int = 56) -> dict[str, tuple[int, ...]]:
    """Shapes of ``forward_features`` on one blank image: a quick sanity check for new backbones."""
    out = model.eval().forward_features(torch.zeros(1, 3, img_size, img_size))
    return {k: tuple(v.shape) for k, v in out.items()}
