"""The one-line Python API: ``model = dermino.load(name_or_path)``, then ``model.embed(images)``.

Users who only want features should not need manifests, configs or caches. ``load`` accepts
a registered backbone name (every dermino ViT and baseline: ``dermino.models.list_backbones``),
a ``prefix:name`` family (``timm:...``), a dermino export folder (``config.json`` +
``model.safetensors``) or a weights file with ``backbone=`` naming its architecture. The
returned ``Model`` applies the same test-time transform as ``dermino embed`` (so both give the
same features) and returns CLS, mean-pooled or per-patch features as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dermino.data.images import read_rgb, to_rgb
from dermino.features import (
    POOLS,
    EmbedConfig,
    EvalTransform,
    eval_transform,
    model_preprocess,
    pool_features,
    resolve_pool,
)
from dermino.models import create, load_exported

ImageLike = str | Path | Image.Image | torch.Tensor
API_POOLS = (*POOLS, "patch")


class Model:
    """A frozen backbone with its transform. ``embed`` returns float32 numpy arrays."""

    def __init__(self, backbone: torch.nn.Module, transform: EvalTransform, config: dict[str, Any],
                 device: str = "cpu"):
        self.backbone = backbone.eval().to(device)
        self.transform = transform
        self.config = config
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return f"dermino.Model({self.config['name']!r}, dim={self.config['embed_dim']})"

    def _batch(self, items: Sequence[ImageLike]) -> torch.Tensor:
        out = []
        for i, item in enumerate(items):
            if isinstance(item, torch.Tensor):  # already transformed (C, H, W)
                if item.ndim != 3:
                    raise ValueError(f"image {i}: a tensor must be (C, H, W), got shape {tuple(item.shape)}")
                out.append(item.float())
            elif isinstance(item, Image.Image):
                out.append(self.transform(to_rgb(item)))
            elif isinstance(item, str | Path):
                out.append(self.transform(read_rgb(item)))
            else:
                raise TypeError(f"image {i}: expected a path, PIL image or tensor, got {type(item).__name__}")
        return torch.stack(out)

    def embed(self, images: ImageLike | Iterable[ImageLike], pool: str = "auto", batch_size: int = 32) -> np.ndarray:
        """Features of ``images`` (paths, PIL images or transformed (C, H, W) tensors; a
        (B, C, H, W) tensor is a batch). ``pool``: ``cls`` / ``mean`` / ``cls+mean`` -> (N, D),
        ``patch`` -> (N, P, D) patch tokens in raster order (grid = image_size / patch_size);
        ``auto`` (default): the feature the model's publisher reports (``proj`` for a
        vision-language baseline), else ``cls``."""
        if pool not in API_POOLS:
            raise ValueError(f"pool must be one of {API_POOLS}, got {pool!r}")
        pool = resolve_pool(self.backbone, pool)
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            items: list[ImageLike] = list(images)
        elif isinstance(images, str | Path | Image.Image | torch.Tensor):
            items = [images]
        else:
            items = list(images)
        if not items:
            raise ValueError("embed: no images given")
        outs = []
        with torch.inference_mode():
            for lo in range(0, len(items), batch_size):
                x = self._batch(items[lo: lo + batch_size]).to(self.device)
                feats = self.backbone.forward_features(x)
                if pool == "patch":
                    if not isinstance(feats, dict) or feats.get("patch") is None:
                        raise ValueError(f"{self.config['name']} returns no patch tokens")
                    vec = feats["patch"]
                else:
                    vec = pool_features(feats, pool)
                outs.append(vec.float().cpu().numpy())
        return np.concatenate(outs)


def load(name_or_path: str | Path, weights: str | Path | None = None, *, backbone: str | None = None,
         image_size: int | None = None, device: str = "cpu", preprocess: str | None = None,
         **overrides: Any) -> Model:
    """A ready-to-use ``Model``: registered name, ``prefix:name``, export folder, or weights file.

    ``weights`` is a local checkpoint for a registered name; for a bare weights file pass the
    architecture as ``backbone=``. ``overrides`` go to the backbone constructor (e.g. ``depth=2``).
    ``image_size``: None uses a baseline's own published preprocessing (``model.preprocess``:
    resolution, resize rule, crop, mean/std) and 224 for the rest; a number forces that size
    unless ``preprocess="model"`` says a baseline's own record still wins (``dermino embed``
    passes its EmbedConfig's ``image_size`` and ``preprocess`` this way).
    """
    path = Path(str(name_or_path))
    if path.is_dir():
        if overrides or weights:
            raise ValueError(f"{path}: an export folder carries its own architecture and weights")
        model, name, weights = load_exported(path), path.name, path / "model.safetensors"
    elif path.is_file():
        if backbone is None:
            raise ValueError(f"{path} is a weights file: say which architecture it is, e.g. "
                             f"dermino.load('{path}', backbone='dinov2_vitb14')")
        model, name, weights = create(backbone, weights=str(path), **overrides), backbone, path
    else:
        name = str(name_or_path)
        model = create(name, weights=str(weights) if weights else None, **overrides)
    if preprocess is None:
        preprocess = "model" if image_size is None else "config"
    ecfg = EmbedConfig(image_size=image_size or 224, preprocess=preprocess)
    transform = eval_transform(model, ecfg)
    config = {
        "name": name, "weights": str(weights) if weights else None,
        "embed_dim": int(getattr(model, "embed_dim", 0) or 0),
        "patch_size": getattr(model, "patch_size", None), "image_size": transform.image_size,
        "transform": transform.params(), "preprocessing": model_preprocess(model), "overrides": dict(overrides),
    }
    return Model(model, transform, config, device)
