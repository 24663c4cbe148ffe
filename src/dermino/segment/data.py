"""Training and evaluation datasets of image/mask pairs, with joint augmentation.

Pairs and the strict mask reading live in :mod:`dermino.data.masks` (the pretraining monitor
reads them too); their names are imported here for the segmentation code that used them.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dermino.data.masks import (  # noqa: F401  (re-exported: the segmentation API)
    MaskError,
    Pair,
    check_masks,
    load_pair,
    mask_pairs,
    model_input,
    read_binary_mask,
    resized_pair,
    to_tensor,
)
from dermino.segment.config import AugmentConfig

log = logging.getLogger(__name__)


def random_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop covering ``scale`` of the area with aspect in ``ratio``."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    return 0, 0, width, height  # fall back to the whole image


def augment_pair(
    image: Image.Image, mask: np.ndarray, size_hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[Image.Image, np.ndarray]:
    """Scale-crop, resize, flip and rotate image and mask with the SAME random geometry."""
    m = Image.fromarray(mask.astype(np.uint8) * 255)
    box = random_box(image.width, image.height, tuple(cfg.scale), tuple(cfg.ratio), rng)
    h, w = size_hw
    image = image.resize((w, h), Image.Resampling.BILINEAR, box=box)
    m = m.resize((w, h), Image.Resampling.NEAREST, box=box)
    img = np.asarray(image)
    arr = np.asarray(m) > 127
    if rng.random() < cfg.hflip:
        img, arr = img[:, ::-1], arr[:, ::-1]
    if rng.random() < cfg.vflip:
        img, arr = img[::-1], arr[::-1]
    if cfg.rot90 and h == w:
        k = int(rng.integers(0, 4))
        img, arr = np.rot90(img, k), np.rot90(arr, k)
    return Image.fromarray(np.ascontiguousarray(img)), np.ascontiguousarray(arr)


class SegmentationDataset(Dataset):
    """``(image (3, H, W) normalised, mask (H, W) int64 0/1, index)`` at the training size.

    With ``augment`` the random geometry comes from a generator seeded by (seed, epoch, index),
    so a run is reproducible whatever the worker layout; call ``set_epoch`` each epoch.
    """

    def __init__(
        self,
        pairs: list[Pair],
        size_hw: tuple[int, int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ):
        self.pairs = pairs
        self.size_hw = size_hw
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.augment is None:
            x, mask = resized_pair(self.pairs[i], self.size_hw, self.mean, self.std)
            return x, torch.from_numpy(mask.astype(np.int64)), i
        image, mask = load_pair(self.pairs[i])
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image, mask = augment_pair(image, mask, self.size_hw, self.augment, rng)
        return to_tensor(image, self.mean, self.std), torch.from_numpy(mask.astype(np.int64)), i


class EvalDataset(Dataset):
    """``(image at the model size, mask at the ORIGINAL size, index)``: metrics are computed at full resolution."""

    def __init__(self, pairs: list[Pair], size_hw: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]):
        self.pairs = pairs
        self.size_hw = size_hw
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, mask = model_input(self.pairs[i], self.size_hw, self.mean, self.std)
        return x, torch.from_numpy(mask), i


def collate_eval(batch: list) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """Stack images (same size); keep masks as a list (their sizes differ)."""
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch], [b[2] for b in batch]
