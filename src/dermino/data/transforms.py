"""Multi-crop augmentation for DINOv2-style pretraining, and the evaluation transform.

Self-distillation needs several views of one image that share content but differ in scale
and photometry: 2 large *global* crops (the teacher sees these) and N small *local* crops
(student only), so the student must predict the global picture from a part of it. The
photometric recipe follows DINOv2: flips, colour jitter, grayscale, then a blur that is
always applied to the first global crop, rarely to the second (which is solarised instead),
and half the time to local crops, so the two global views are deliberately asymmetric.

All randomness comes from torch's global RNG, so seeding torch before a call makes the
crops reproducible (the dataset does that per sample, which makes resume exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from PIL import Image
from torchvision.transforms import v2

from dermino.config import NonNegative, Probability, Rule, check_config
from dermino.data.normalisation import IMAGENET_MEAN, IMAGENET_STD


def _multiple_of_patch(c: CropsConfig) -> bool:
    return all(size > 0 and size % c.patch_size == 0 for size in (c.global_size, c.local_size))


def _scale_range(scale: tuple[float, float]) -> bool:
    return len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1


@dataclass
class CropsConfig:
    """Sizes, scales and photometric probabilities of the multi-crop views."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(_multiple_of_patch, "global_size={c.global_size} and local_size={c.local_size} must each be a "
             "positive multiple of the patch size {c.patch_size}"),
        Rule(lambda c: _scale_range(c.global_scale), "global_scale={c.global_scale} must satisfy 0 < min <= max <= 1"),
        Rule(lambda c: _scale_range(c.local_scale), "local_scale={c.local_scale} must satisfy 0 < min <= max <= 1"),
    )

    global_size: int = 224
    local_size: int = 98
    n_local: Annotated[int, NonNegative] = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    patch_size: int = 14
    flip_p: Annotated[float, Probability] = 0.5
    jitter_p: Annotated[float, Probability] = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: Annotated[float, Probability] = 0.2
    blur_p_global1: Annotated[float, Probability] = 1.0
    blur_p_global2: Annotated[float, Probability] = 0.1
    blur_p_local: Annotated[float, Probability] = 0.5
    solarize_p_global2: Annotated[float, Probability] = 0.2
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # where colour jitter / grey / blur / solarise run: "loader" (PIL, per image, in the workers) or
    # "device" (batched on the training device; the loader only crops: ~5x more images/s per core)
    photometric: Literal["loader", "device"] = "loader"


def _check_sizes(cfg: CropsConfig) -> None:
    """The declared checks of ``cfg`` (crops built in code skip ``load_config``)."""
    check_config(cfg, "crops")


def _blur(p: float) -> v2.Transform:
    # kernel 9 covers sigma up to 2 at crop sizes from 42 to 224 px
    return v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=p)


def _normalize(cfg: CropsConfig) -> v2.Transform:
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)])


class MultiCropTransform:
    """PIL image -> ``{"global": [2 x (3, G, G)], "local": [n_local x (3, L, L)]}`` float tensors."""

    def __init__(self, cfg: CropsConfig | None = None):
        self.cfg = cfg = cfg or CropsConfig()
        _check_sizes(cfg)
        bicubic = v2.InterpolationMode.BICUBIC
        colour = v2.Compose(
            [
                v2.RandomHorizontalFlip(p=cfg.flip_p),
                v2.RandomApply(
                    [v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_p
                ),
                v2.RandomGrayscale(p=cfg.grayscale_p),
            ]
        )
        norm = _normalize(cfg)
        g_crop = v2.RandomResizedCrop(cfg.global_size, scale=cfg.global_scale, interpolation=bicubic, antialias=True)
        l_crop = v2.RandomResizedCrop(cfg.local_size, scale=cfg.local_scale, interpolation=bicubic, antialias=True)
        self.global1 = v2.Compose([g_crop, colour, _blur(cfg.blur_p_global1), norm])
        self.global2 = v2.Compose(
            [
                g_crop,
                colour,
                _blur(cfg.blur_p_global2),
                v2.RandomSolarize(threshold=128, p=cfg.solarize_p_global2),
                norm,
            ]
        )
        self.local = v2.Compose([l_crop, colour, _blur(cfg.blur_p_local), norm])

    def __call__(self, image: Image.Image) -> dict[str, list[torch.Tensor]]:
        return {
            "global": [self.global1(image), self.global2(image)],
            "local": [self.local(image) for _ in range(self.cfg.n_local)],
        }


def eval_transform(
    size: int = 224,
    resize: int | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> v2.Compose:
    """Resize the short side (default ``size * 256/224``), centre-crop ``size``, normalise."""
    resize = resize or round(size * 256 / 224)
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )
