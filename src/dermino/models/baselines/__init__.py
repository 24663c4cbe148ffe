"""Other backbones in the same registry and with the same API, for comparisons.

One file per library family, each building models with the library they were released for:

* ``dinov2.py``: ``dinov2_vit{s,b,l}14`` (+ ``_reg4``), dermino's ViTBackbone at DINOv2 sizes;
* ``torchvision.py``: ``resnet50``, ``resnext50_32x4d``, ``resnext101_32x8d``;
* ``timm_models.py``: ``timm:<name>``, ``vit_base_patch16_224``, ``dinov3_vit{s,b,l}16``, ``panderm_vit{l,b}16``;
* ``open_clip_models.py``: ``open_clip:<arch>``, ``clip_vit_b16``, ``siglip_vit_b16``, ``biomedclip``,
  ``monet``, ``dermlip_vit_b16``, ``make_vit_b16``;
* ``transformers_models.py``: ``medsiglip_448``;
* ``unreleased.py``: cards for announced models without public weights (DermFM-Zero).

Every wrapper has ``forward_features(x, masks=None) -> {"cls", "patch"[, "proj"]}``, ``forward(x)``,
``get_intermediate_layers``, ``embed_dim``, ``patch_size`` (None for CNNs), ``mean``, ``std``,
``load_checkpoint(state_dict) -> (missing, unexpected, ignored)`` used by load_weights, and, for
a named comparator, ``preprocess`` (models/preprocess.py) and its ``Card`` (``CARDS[name]``).
"""

from __future__ import annotations

import torch
from torch import nn

from dermino.models.baselines import dinov2, open_clip_models, timm_models, torchvision, unreleased  # noqa: F401
from dermino.models.baselines.common import CARDS, Card, check_published_sha256, get_card
from dermino.models.baselines.dinov2 import DINOV2_SIZES
from dermino.models.baselines.open_clip_models import OpenCLIPBaseline, OpenCLIPTextTower, OpenCLIPVisual
from dermino.models.baselines.timm_models import TimmBackbone
from dermino.models.baselines.torchvision import TorchvisionResNet

try:  # transformers is a core dependency, but keep the rest usable if it is broken
    from dermino.models.baselines import transformers_models  # noqa: F401
except ImportError:  # pragma: no cover
    transformers_models = None  # type: ignore[assignment]

__all__ = [
    "CARDS", "DINOV2_SIZES", "Card", "OpenCLIPBaseline", "OpenCLIPTextTower", "OpenCLIPVisual", "TimmBackbone",
    "TorchvisionResNet", "check_published_sha256", "feature_shapes", "get_card",
]


@torch.no_grad()
def feature_shapes(model: nn.Module, img_size: int = 56) -> dict[str, tuple[int, ...]]:
    """Shapes of ``forward_features`` on one blank image: a quick sanity check for new backbones."""
    out = model.eval().forward_features(torch.zeros(1, 3, img_size, img_size))
    return {k: tuple(v.shape) for k, v in out.items()}
