"""``create(name, weights=None, **overrides)``: build a registered backbone and load local weights."""

from __future__ import annotations

from torch import nn

from dermino.models.backbone import ViTBackbone
from dermino.models.baselines.common import check_published_sha256, get_card
from dermino.models.registry import lookup
from dermino.models.weights import WeightsError, checkpoint_grid, load_weights, read_state_dict


def create(name: str, weights: str | None = None, **overrides) -> nn.Module:
    """Build a backbone by registered name or ``prefix:name``; ``weights`` is a local checkpoint path.

    Weight formats understood (see ``dermino.models.weights.load_weights``): DINOv2 official,
    timm, dermino checkpoints and exports, and each comparator's published layout (its
    ``load_checkpoint``); .safetensors or .pth/.pt. A file whose sha256 differs from the one
    the model's publisher states (``dermino backbones``) loads with a warning.
    """
    card = get_card(name)
    if card is not None and card.status == "unreleased":
        raise WeightsError(f"{name}: not loadable yet: {card.note}")
    build = lookup(name)
    model = build(**overrides)
    if weights:
        check_published_sha256(name, weights)
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
