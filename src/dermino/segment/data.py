"""Image/mask pairs from a manifest's ``mask`` column, with joint augmentation.

Masks are checked, not trusted: a mask must have exactly two grey levels (0/255, 0/1 ...) or
one (all background or all lesion); anything else (a JPEG-compressed mask, a label map with
several classes, a soft mask) is an error naming the file, because thresholding it silently
would change the ground truth. Masks that were downsized with anti-aliasing (the 200x150
HAM10000 masks: about 80 % of them have grey edge pixels, ~2 % of the pixels) are accepted
only when asked, with ``mask_threshold`` (a fraction of the mask's top level, e.g. 0.5).
A mask whose size differs from its image is resized with nearest neighbour, so it stays binary.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from dermino.data.images import ImageReadError, read_rgb
from dermino.data.manifest import resolve
from dermino.progress import tqdm
from dermino.segment.config import AugmentConfig

log = logging.getLogger(__name__)


class MaskError(ValueError):
    """A mask file is unusable (not binary, unreadable); the message names the file."""


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path
    row: int  # manifest row, for error messages and outputs
    threshold: float | None = None  # see read_binary_mask


def read_binary_mask(
    path: str | Path, size: tuple[int, int] | None = None, threshold: float | None = None
) -> np.ndarray:
    """``(H, W)`` bool lesion mask; ``size`` = (width, height) of the image it belongs to.

    Two grey levels: the higher one is lesion. One level: zero means all background, any
    other value all lesion. More levels raise ``MaskError`` naming the file, unless
    ``threshold`` is given: then lesion is ``value >= threshold * max value`` (for masks with
    anti-aliased edges).
    """
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            im.load()
            grey = im.convert("L")
    except Exception as exc:
        raise MaskError(f"{path}: cannot read mask ({type(exc).__name__}: {exc})") from exc
    if size is not None and grey.size != tuple(size):
        log.debug("resizing mask %s from %s to %s (nearest)", path, grey.size, size)
        grey = grey.resize(tuple(size), Image.Resampling.NEAREST)
    arr = np.asarray(grey)
    levels = np.unique(arr)
    if len(levels) > 2 and threshold is not None:
        return arr >= threshold * float(levels[-1])
    if len(levels) > 2:
        shown = ", ".join(str(v) for v in levels[:8]) + (" ..." if len(levels) > 8 else "")
        raise MaskError(
            f"{path}: mask is not binary ({len(levels)} grey levels: {shown}); "
            "expected two levels such as 0/255 or 0/1 (for masks with anti-aliased edges, "
            "set mask_threshold=0.5)"
        )
    if len(levels) == 1:
        return np.full(arr.shape, bool(levels[0] > 0))
    return arr == levels[1]


def mask_pairs(df: pd.DataFrame, split: str | None = None, threshold: float | None = None) -> list[Pair]:
    """Rows of ``df`` (of ``split`` if given) that have a mask; rows without one are counted and logged."""
    if "mask" not in df.columns:
        raise ValueError("manifest has no 'mask' column: segmentation needs lesion masks")
    rows = df if split is None else df[df["split"].astype(str) == split]
    pairs, skipped = [], 0
    for i, (image, mask) in zip(rows.index, zip(rows["image"], rows["mask"], strict=True), strict=True):
        mpath = resolve(df, mask)
        if mpath is None:
            skipped += 1
            continue
        image_path = Path(os.path.normpath(resolve(df, image)))
        pairs.append(Pair(image=image_path, mask=Path(os.path.normpath(mpath)), row=int(i), threshold=threshold))
    where = f" in split '{split}'" if split is not None else ""
    if skipped:
        log.info("%d of %d rows%s have no mask and are skipped", skipped, len(rows), where)
    if not pairs and len(rows):
        raise ValueError(f"none of the {len(rows)} rows{where} has a mask")
    return pairs


def check_masks(pairs: list[Pair], progress: bool = True) -> None:
    """Read every mask once before training, so bad masks are all reported up front, not mid-epoch."""
    bad: list[str] = []
    for pair in tqdm(pairs, desc="check masks", unit="mask", disable=not progress, leave=False):
        try:
            read_binary_mask(pair.mask, threshold=pair.threshold)
        except MaskError as exc:
            bad.append(f"{exc} (manifest row {pair.row})")
    if bad:
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise MaskError(f"{len(bad)} of {len(pairs)} masks are unusable:\n  " + "\n  ".join(bad[:10]) + more)


def load_pair(pair: Pair) -> tuple[Image.Image, np.ndarray]:
    """The RGB image and its bool mask at the image's size."""
    try:
        image = read_rgb(pair.image)
    except ImageReadError as exc:
        raise ImageReadError(exc.path, f"{exc.reason} (manifest row {pair.row})") from exc
    return image, read_binary_mask(pair.mask, size=image.size, threshold=pair.threshold)


def to_tensor(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


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
        image, mask = load_pair(self.pairs[i])
        h, w = self.size_hw
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            image, mask = augment_pair(image, mask, self.size_hw, self.augment, rng)
        else:
            image = image.resize((w, h), Image.Resampling.BILINEAR)
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 127
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
        image, mask = load_pair(self.pairs[i])
        h, w = self.size_hw
        x = to_tensor(image.resize((w, h), Image.Resampling.BILINEAR), self.mean, self.std)
        return x, torch.from_numpy(mask), i


def collate_eval(batch: list) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """Stack images (same size); keep masks as a list (their sizes differ)."""
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch], [b[2] for b in batch]
