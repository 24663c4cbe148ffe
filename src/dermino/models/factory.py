"""``create(name, weights=None, **overrides)``: build a registered backbone and load local weights."""

from __future__ import annotations

from torch import nn

from dermino.models.backbone import ViTBackbone
from dermino.models.registry import lookup
from dermino.models.weights import checkpoint_grid, load_weights, read_state_dict


def create(name: str, weights: str | None = None, **overrides) -> nn.Module:
    """Build a backbone by registered name or ``prefix:name``; ``weights`` is a local checkpoint path.

    Weight formats understood (see ``dermino.models.weights.load_weights``): DINOv2 official,
    timm, dermino checkpoints and exports; .safetensors or .pth/.pt.
    """
    build = lookup(name)
    model = build(**overrides)
    if weights:
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
