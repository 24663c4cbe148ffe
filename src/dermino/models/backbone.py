"""Vision Transformer backbones built on timm, with a mask token for iBOT.

One uniform API for every backbone dermino trains or evaluates:

* ``forward_features(x, masks=None) -> {"cls": (B, D), "patch": (B, N, D)}``
* ``forward(x) -> (B, D)`` (the class token: what kNN and linear probes use)
* ``get_intermediate_layers(x, indices) -> [(B, D, h, w), ...]`` (for dense heads)

``masks`` is a boolean (B, N) tensor: True patches are replaced by the learnable mask
token before position embeddings are added, as iBOT requires.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import timm
import torch
from timm.models import checkpoint_seq
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
_TINY_OVERRIDES: dict[str, dict] = {}
_PREFIXES: dict[str, Callable[..., nn.Module]] = {}
_VIT_TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}


def register(name: str, tiny: dict | None = None) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make a backbone constructor available to ``create(name)``.

    ``tiny`` are overrides that make the model small enough for a CPU smoke test (the
    registry test builds every registered name with them); None means "build as is".
    """

    def deco(fn: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = fn
        _TINY_OVERRIDES[name] = dict(tiny or {})
        return fn

    return deco


def register_prefix(prefix: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator for open families: ``create("timm:vit_small_patch16_224")`` calls ``fn(rest, **kw)``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _PREFIXES[prefix] = fn
        return fn

    return deco


def _load_baselines() -> None:
    # Imported lazily: baselines.py registers into this module, so importing it at the top
    # would be circular.
    import dermino.models.baselines  # noqa: F401


def list_backbones() -> list[str]:
    """Concrete registered names (open families such as ``timm:<name>`` are in list_prefixes)."""
    _load_baselines()
    return sorted(_REGISTRY)


def list_prefixes() -> list[str]:
    _load_baselines()
    return sorted(_PREFIXES)


def tiny_overrides(name: str) -> dict:
    """Overrides that build ``name`` at test size (see ``register``)."""
    _load_baselines()
    return dict(_TINY_OVERRIDES.get(name, {}))


def _vit_factory(size: str) -> BackboneFactory:
    def make(**overrides) -> ViTBackbone:
        base = VIT_SIZES[size]
        spec = ViTSpec(**{**base.__dict__, "extra": dict(base.extra), **overrides})
        return ViTBackbone(spec)

    return make


for _size in VIT_SIZES:
    register(f"dermino_vit_{_size}_14", tiny=_VIT_TINY)(_vit_factory(_size))
    register(f"vit_{_size}_patch14", tiny=_VIT_TINY)(_vit_factory(_size))


def create(name: str, weights: str | None = None, **overrides) -> nn.Module:
    """Build a backbone by registered name or ``prefix:name``; ``weights`` is a local checkpoint path.

    Weight formats understood (see ``dermino.models.weights.load_weights``): DINOv2 official,
    timm, dermino checkpoints and exports; .safetensors or .pth/.pt.
    """
    _load_baselines()
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _PREFIXES:
        build = functools.partial(_PREFIXES[prefix], rest)
    elif name in _REGISTRY:
        build = _REGISTRY[name]
    else:
        raise KeyError(
            f"unknown backbone {name!r}; available: {', '.join(list_backbones())}; "
            f"or one of the families {', '.join(p + ':<name>' for p in list_prefixes())}"
        )
    model = build(**overrides)
    if weights:
        from dermino.models.weights import checkpoint_grid, load_weights, read_state_dict

        state = read_state_dict(weights)
        grid = checkpoint_grid(state)
        if isinstance(model, ViTBackbone) and "img_size" not in overrides and grid:
            native = grid * model.patch_size
            if native != model.spec.img_size:
                # keep the checkpoint's own grid: inputs of any size then interpolate from the
                # trained embeddings once, instead of from an already resampled copy
                model = build(**overrides, img_size=native)
        load_weights(model, state, source=str(weights))
    return model
