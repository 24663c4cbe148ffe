"""A backbone as an image descriptor for de-duplication (``dermino data dedup --backbone``).

De-duplication lives in the data layer and takes any ``Embedder`` (paths -> array); this
one confirms near-duplicate candidates by the cosine of a registered backbone's CLS token.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dermino.data.dedup import Embedder
from dermino.data.images import read_rgb
from dermino.features.cache import model_hash
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

    def identity() -> str:
        """Names the descriptors in a shared cache (dedup under torchrun): same weights, same numbers.
        A function, so a single-process run never pays for hashing the weights."""
        return json.dumps({"backbone": backbone, "model": model_hash(model, weights), "image_size": image_size,
                           "batch_size": batch_size, "transform": transform.params()}, sort_keys=True)

    embed.identity = identity  # type: ignore[attr-defined]
    return embed
