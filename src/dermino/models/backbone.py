"""Vision Transformer backbones built on timm, with a mask token for iBOT.

One uniform API for every backbone dermino trains or evaluates:

* ``forward_features(x, masks=None) -> {"cls": (B, D), "patch": (B, N, D)}``
* ``forward(x) -> (B, D)`` (the class token: what kNN and linear probes use)
* ``get_intermediate_layers(x, indices) -> [(B, D, h, w), ...]`` (for dense heads)

``masks`` is a boolean (B, N) tensor: True patches are replaced by the learnable mask
token before position embeddings are added, as iBOT requires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import timm
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ViTSpec:
    """Architecture of a patch-14 ViT; DINOv2 sizes by default."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 14
    img_size: int = 224
    mlp_ratio: float = 4.0
    num_register_tokens: int = 0
    layerscale_init: float | None = 1e-5
    drop_path_rate: float = 0.0
    extra: dict = field(default_factory=dict)


VIT_SIZES: dict[str, ViTSpec] = {
    "tiny": ViTSpec(embed_dim=192, depth=12, num_heads=3),
    "small": ViTSpec(embed_dim=384, depth=12, num_heads=6),
    "base": ViTSpec(embed_dim=768, depth=12, num_heads=12),
    "large": ViTSpec(embed_dim=1024, depth=24, num_heads=16),
}


class ViTBackbone(nn.Module):
    """A timm ``VisionTransformer`` plus a mask token and the dermino feature API."""

    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.spec = spec
        self.vit = timm.models.vision_transformer.VisionTransformer(
            img_size=spec.img_size,
            patch_size=spec.patch_size,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio,
            num_classes=0,
            reg_tokens=spec.num_register_tokens,
            no_embed_class=False,
            init_values=spec.layerscale_init,
            drop_path_rate=spec.drop_path_rate,
            dynamic_img_size=True,
            **spec.extra,
        )
        self.mask_token = nn.Parameter(torch.zeros(1, spec.embed_dim))
        self.embed_dim = spec.embed_dim
        self.patch_size = spec.patch_size
        self.num_prefix_tokens = self.vit.num_prefix_tokens
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def _tokens(self, x: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input {h}x{w} is not divisible by the patch size {self.patch_size}")
        tokens = self.vit.patch_embed(x)  # (B, H, W, C) with dynamic_img_size
        if masks is not None:
            b, gh, gw, c = tokens.shape
            m = masks.reshape(b, gh, gw, 1).to(torch.bool)
            tokens = torch.where(m, self.mask_token.to(tokens.dtype).view(1, 1, 1, c), tokens)
        tokens = self.vit._pos_embed(tokens)
        tokens = self.vit.patch_drop(tokens)
        return self.vit.norm_pre(tokens)

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        tokens = self.vit.blocks(self._tokens(x, masks))
        tokens = self.vit.norm(tokens)
        return {"cls": tokens[:, 0], "patch": tokens[:, self.num_prefix_tokens :]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Normalised patch tokens of the given blocks as (B, D, h, w) maps."""
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self._tokens(x, None)
        wanted = {i % len(self.vit.blocks) for i in indices}
        outs: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.vit.blocks):
            tokens = block(tokens)
            if i in wanted:
                patch = self.vit.norm(tokens)[:, self.num_prefix_tokens :]
                outs[i] = patch.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
            if len(outs) == len(wanted):
                break
        return [outs[i % len(self.vit.blocks)] for i in indices]


BackboneFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}


def register(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make a backbone constructor available to ``create(name)``."""

    def deco(fn: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def _vit_factory(size: str) -> BackboneFactory:
    def make(**overrides) -> ViTBackbone:
        base = VIT_SIZES[size]
        spec = ViTSpec(**{**base.__dict__, "extra": dict(base.extra), **overrides})
        return ViTBackbone(spec)

    return make


for _size in VIT_SIZES:
    register(f"dermino_vit_{_size}_14")(_vit_factory(_size))
    register(f"vit_{_size}_patch14")(_vit_factory(_size))


def create(name: str, weights: str | None = None, **overrides) -> nn.Module:
    """Build a registered backbone by name; ``weights`` is a local checkpoint path."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    model = _REGISTRY[name](**overrides)
    if weights:
        from dermino.models.weights import load_weights

        load_weights(model, weights)
    return model
