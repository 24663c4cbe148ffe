"""The test-time transform: resize, centre crop, normalise with the model's statistics.

The arithmetic is torchvision's own (``transforms.functional.resize`` / ``center_crop`` /
``to_tensor`` / ``normalize`` on a PIL image), because that is what open_clip, timm and the
torchvision weights run: a baseline fed through dermino sees the very pixels its publisher's
transform produces (tests/models/test_baselines_preprocess.py checks it against each library).

A backbone with its own published preprocessing (``model.preprocess``, a
``dermino.models.preprocess.Preprocess``) gets exactly that unless the embed config says
``preprocess: config``; then ``image_size``/``resize``/``interpolation`` of the config apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dermino.features.config import EmbedConfig

_MODES = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
          "nearest": InterpolationMode.NEAREST}
_PIL = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class EvalTransform:
    """Resize (shorter side to ``resize``, or ``resize`` x ``resize`` for ``squash``), centre crop, scale to [0, 1], normalise.

    The cost is bounded by the crop, not by the image: when resizing the whole image would make
    it large (a thin 1 x 100,000 strip scaled up to ``resize`` on its short side would need
    gigabytes), only the box of the original that the crop covers (:meth:`crop_box`) is
    resampled, straight to the crop size. Ordinary images take torchvision's exact path.
    """

    image_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def _resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) after torchvision's resize (``Resize(int)`` truncates the longer side)."""
        w, h = size
        if self.resize_mode == "squash":
            return self.resize, self.resize
        if w <= h:
            return self.resize, int(self.resize * h / w)
        return int(self.resize * w / h), self.resize

    def __call__(self, img: Image.Image) -> torch.Tensor:
        nw, nh = self._resized_size(img.size)
        s = self.image_size
        if nw * nh <= 4 * max(s, self.resize) ** 2:
            size = self.resize if self.resize_mode == "shortest" else [self.resize, self.resize]
            img = TF.resize(img, size, interpolation=_MODES[self.interpolation])
            img = TF.center_crop(img, [s, s])
        else:  # the same pixels up to rounding, at the cost of the crop only
            img = img.resize((s, s), _PIL[self.interpolation], box=self.crop_box(img.size), reducing_gap=None)
        return TF.normalize(TF.to_tensor(img), list(self.mean), list(self.std))

    def params(self) -> dict:
        return asdict(self)

    def crop_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The box of an original ``(w, h)`` image (left, top, right, bottom) that the crop covers,
        with torchvision's arithmetic (``Resize(int)`` truncates the longer side; the crop offset rounds)."""
        w, h = size
        nw, nh = self._resized_size(size)
        s = self.image_size
        left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
        sx, sy = nw / w, nh / h
        return left / sx, top / sy, (left + s) / sx, (top + s) / sy


def model_preprocess(model: torch.nn.Module) -> dict | None:
    """The model's own published preprocessing as a dict, or None (dermino ViTs, ``timm:`` ...)."""
    pre = getattr(model, "preprocess", None)
    return pre.params() if pre is not None and hasattr(pre, "params") else None


def resolve_pool(model: torch.nn.Module, pool: str) -> str:
    """``auto``: the feature the model's publisher reports (its ``preprocess.pool``), else ``cls``."""
    if pool != "auto":
        return pool
    pre = getattr(model, "preprocess", None)
    return str(getattr(pre, "pool", "cls") or "cls")


def eval_transform(model: torch.nn.Module, cfg: EmbedConfig) -> EvalTransform:
    """The test-time transform for ``model``: its own published preprocessing, else the config's
    size with the model's mean/std (the size checked against its patch)."""
    if cfg.interpolation not in _MODES:
        raise ValueError(f"interpolation must be bicubic/bilinear/nearest, got {cfg.interpolation!r}")
    pre = getattr(model, "preprocess", None)
    if pre is not None and getattr(cfg, "preprocess", "model") == "model":
        return EvalTransform(pre.image_size, pre.resize, tuple(pre.mean), tuple(pre.std), pre.interpolation,
                             pre.resize_mode)
    patch = int(getattr(model, "patch_size", 1) or 1)
    if cfg.image_size % patch:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of the patch size {patch}")
    mean = tuple(float(v) for v in getattr(model, "mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in getattr(model, "std", (0.229, 0.224, 0.225)))
    return EvalTransform(cfg.image_size, cfg.resize or cfg.image_size, mean, std, cfg.interpolation)
