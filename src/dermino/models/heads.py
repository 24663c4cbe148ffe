"""DINO and iBOT projection heads (paper Methods 4.1.2-4.1.3, recipe of DINOv2).

MLP (in -> hidden -> hidden -> bottleneck), L2-normalise, then a weight-normalised linear
layer onto K prototypes whose weight-norm gain is fixed to 1: each logit is a cosine
similarity between the bottleneck vector and a prototype direction. Normalising both sides
keeps the logits bounded, which is what lets the teacher temperature mean something.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrototypeLayer(nn.Module):
    """Linear map onto K prototypes with unit-norm rows: ``x @ (v / ||v||)^T`` (g fixed to 1)."""

    def __init__(self, in_dim: int, n_prototypes: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(n_prototypes, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    @property
    def weight(self) -> Tensor:
        # torch's fused weight-norm kernel with gain 1: the same v / ||v|| per row as F.normalize, but one
        # pass forward and backward (norm + divide + broadcast backward cost 3x more on 65536 x 256)
        v = self.weight_v
        return torch._weight_norm(v, torch.ones(v.shape[0], 1, device=v.device, dtype=v.dtype), 0)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """Projection head: CLS (or patch) tokens (..., in_dim) -> prototype logits (..., K)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(n_layers - 1):
            layers += [nn.Linear(dim, hidden_dim), nn.GELU()]
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = PrototypeLayer(bottleneck_dim, out_dim)
        self.in_dim, self.out_dim, self.bottleneck_dim = in_dim, out_dim, bottleneck_dim
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def bottleneck(self, x: Tensor) -> Tensor:
        """L2-normalised bottleneck features (eps suits half precision)."""
        return F.normalize(self.mlp(x), dim=-1, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(self.bottleneck(x))

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return list(self.last_layer.parameters())

    def set_last_layer_trainable(self, trainable: bool) -> None:
        """The recipe freezes the prototypes for the first epoch (stabilises early training)."""
        for p in self.last_layer.parameters():
            p.requires_grad_(trainable)


class IBOTHead(DINOHead):
    """Same architecture applied to the masked patch tokens (Eq. 4); separate weights by default."""


@dataclass
class HeadConfig:
    """Sizes of the projection heads; DermINO/DINOv2 recipe values by default."""

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    n_layers: int = 3
    ibot_separate_head: bool = True
    ibot_out_dim: int | None = None  # None: same as out_dim


def build_heads(in_dim: int, cfg: HeadConfig | None = None) -> tuple[DINOHead, DINOHead]:
    """(dino_head, ibot_head); the same module twice when ``cfg.ibot_separate_head`` is False."""
    cfg = cfg or HeadConfig()
    dino = DINOHead(in_dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.n_layers)
    if not cfg.ibot_separate_head:
        if cfg.ibot_out_dim not in (None, cfg.out_dim):
            raise ValueError("a shared iBOT head cannot have its own ibot_out_dim")
        return dino, dino
    ibot = IBOTHead(in_dim, cfg.ibot_out_dim or cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.n_layers)
    return dino, ibot
