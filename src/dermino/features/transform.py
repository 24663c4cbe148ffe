"""The test-time transform: resize the shorter side, centre crop, normalise with the model's statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from dermino.features.config import EmbedConfig


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side, center crop, scale to [0, 1], normalise."""

    image_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.image_size, round(w * scale)), max(self.image_size, round(h * scale))
        resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
        img = img.resize((nw, nh), resample[self.interpolation])
        left, top = (nw - self.image_size) // 2, (nh - self.image_size) // 2
        img = img.crop((left, top, left + self.image_size, top + self.image_size))
        arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (t - mean) / std

    def params(self) -> dict:
        return asdict(self)


def eval_transform(model: torch.nn.Module, cfg: EmbedConfig) -> EvalTransform:
    """The test-time transform for ``model``: its own mean/std, image size checked against its patch."""
    patch = int(getattr(model, "patch_size", 1) or 1)
    if cfg.image_size % patch:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of the patch size {patch}")
    if cfg.interpolation not in ("bicubic", "bilinear", "nearest"):
        raise ValueError(f"interpolation must be bicubic/bilinear/nearest, got {cfg.interpolation!r}")
    mean = tuple(float(v) for v in getattr(model, "mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in getattr(model, "std", (0.229, 0.224, 0.225)))
    return EvalTransform(cfg.image_size, cfg.resize or cfg.image_size, mean, std, cfg.interpolation)
