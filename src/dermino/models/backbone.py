"""Vision Transformer backbones built on timm, with a mask token for iBOT.

One uniform API for every backbone dermino trains or evaluates:

* ``forward_features(x, masks=None) -> {"cls": (B, D), "patch": (B, N, D)}``
* ``forward(x) -> (B, D)`` (the class token: what kNN and linear probes use)
* ``get_intermediate_layers(x, indices) -> [(B, D, h, w), ...]`` (for dense heads)

``masks`` is a boolean (B, N) tensor: True patches are replaced by the learnable mask
token before position embeddings are added, as iBOT requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import timm
import torch
from timm.models import checkpoint_seq
from torch import nn
from torch.utils.checkpoint import checkpoint

from dermino.data.normalisation import IMAGENET_MEAN, IMAGENET_STD
from dermino.models.packing import Packing, crop_drop_scale, pack, unpack
from dermino.models.registry import (  # re-exported: the registry's old home
    BackboneFactory,
    list_backbones,
    list_prefixes,
    register,
    register_prefix,
    tiny_overrides,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "VIT_SIZES", "BackboneFactory", "ViTBackbone", "ViTSpec",
    "list_backbones", "list_prefixes", "register", "register_prefix", "tiny_overrides",
]


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
            # With registers, follow timm's DINOv2-reg layout: position embeddings cover the
            # patches only (the class token's is folded into it, registers have none).
            no_embed_class=spec.num_register_tokens > 0,
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
        tokens = self._tokens(x, masks)
        if self.vit.grad_checkpointing and torch.is_grad_enabled():  # recompute blocks in backward: less memory
            tokens = checkpoint_seq(self.vit.blocks, tokens, use_reentrant=False)
        else:
            tokens = self.vit.blocks(tokens)
        tokens = self.vit.norm(tokens)
        return {"cls": tokens[:, 0], "patch": tokens[:, self.num_prefix_tokens :]}

    def forward_features_packed(
        self, crops: Sequence[tuple[torch.Tensor, torch.Tensor | None]]
    ) -> list[dict[str, torch.Tensor]]:
        """``forward_features`` of several crop batches (e.g. global and local crops) in one packed
        forward with a block-diagonal attention mask (``models/packing.py``); same outputs."""
        packed, packing = pack([self._tokens(x, masks) for x, masks in crops])
        mask = packing.mask
        for block in self.vit.blocks:
            if self.vit.grad_checkpointing and torch.is_grad_enabled():
                packed = checkpoint(_packed_block, block, packed, mask, packing, use_reentrant=False)
            else:
                packed = _packed_block(block, packed, mask, packing)
        tokens = unpack(self.vit.norm(packed), packing)
        return [{"cls": t[:, 0], "patch": t[:, self.num_prefix_tokens :]} for t in tokens]

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


def _packed_block(block: nn.Module, x: torch.Tensor, mask: torch.Tensor, packing: Packing) -> torch.Tensor:
    """A timm ``Block`` on packed rows; in training its stochastic depth drops whole crops, not rows."""
    p1 = getattr(block.drop_path1, "drop_prob", 0.0)
    p2 = getattr(block.drop_path2, "drop_prob", 0.0)
    if not (block.training and (p1 or p2)):
        return block(x, attn_mask=mask)
    x = x + block.ls1(block.attn(block.norm1(x), attn_mask=mask)) * crop_drop_scale(packing, p1, x.dtype)
    return x + block.ls2(block.mlp(block.norm2(x))) * crop_drop_scale(packing, p2, x.dtype)


_VIT_TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}


def _vit_factory(size: str) -> BackboneFactory:
    def make(**overrides) -> ViTBackbone:
        base = VIT_SIZES[size]
        spec = ViTSpec(**{**base.__dict__, "extra": dict(base.extra), **overrides})
        return ViTBackbone(spec)

    return make


for _size in VIT_SIZES:
    register(f"dermino_vit_{_size}_14", tiny=_VIT_TINY)(_vit_factory(_size))
    register(f"vit_{_size}_patch14", tiny=_VIT_TINY)(_vit_factory(_size))
