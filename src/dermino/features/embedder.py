"""A backbone as an image descriptor for de-duplication (``dermino data dedup --backbone``).

De-duplication lives in the data layer and takes any ``Embedder`` (paths -> array); this
one confirms near-duplicate candidates by the cosine of a registered backbone's CLS token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dermino.data.dedup import Embedder
from dermino.data.images import read_rgb
from dermino.features.config import EmbedConfig
from dermino.features.transform import eval_transform


def backbone_embedder(backbone: str, weights: str | None = None, image_size: int = 112,
                      batch_size: int = 32) -> Embedder:
    """Descriptor from a registered backbone (CLS token), built once via ``dermino.models.create``."""
    from dermino.models import create

    model = create(backbone, weights=weights).eval()
    transform = eval_transform(model, EmbedConfig(image_size=image_size))

    def embed(paths: list[Path]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for lo in range(0, len(paths), batch_size):
                x = torch.stack([transform(read_rgb(p)) for p in paths[lo: lo + batch_size]])
                out.append(model.forward_features(x)["cls"].float().numpy())
        return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)

    return embed
