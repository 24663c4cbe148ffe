"""Lesion masks of a manifest's ``mask`` column: image/mask pairs, strict binary reading, resizing.

Masks are checked, not trusted: a mask must have exactly two grey levels (0/255, 0/1 ...) or
one (all background or all lesion); anything else (a JPEG-compressed mask, a label map with
several classes, a soft mask) is an error naming the file, because thresholding it silently
would change the ground truth. Masks that were downsized with anti-aliasing (the 200x150
HAM10000 masks: about 80 % of them have grey edge pixels, ~2 % of the pixels) are accepted
only when asked, with ``mask_threshold`` (a fraction of the mask's top level, e.g. 0.5).
A mask whose size differs from its image is resized with nearest neighbour, so it stays binary.

Here (not in ``dermino.segment``) because the pretraining monitor's dense probe reads the same
pairs the same way as ``dermino segment`` does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from dermino.data.images import ImageReadError, read_rgb
from dermino.data.manifest import resolve
from dermino.progress import tqdm

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


def resized_pair(
    pair: Pair, size_hw: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, np.ndarray]:
    """The normalised image (3, H, W) at ``size_hw`` (bilinear) and its bool mask at that size (nearest)."""
    image, mask = load_pair(pair)
    h, w = size_hw
    image = image.resize((w, h), Image.Resampling.BILINEAR)
    small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 127
    return to_tensor(image, mean, std), small


def model_input(
    pair: Pair, size_hw: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, np.ndarray]:
    """The normalised image at ``size_hw`` and its bool mask at the ORIGINAL size (metrics are scored there)."""
    image, mask = load_pair(pair)
    h, w = size_hw
    return to_tensor(image.resize((w, h), Image.Resampling.BILINEAR), mean, std), mask


def subset_pairs(pairs: list[Pair], n: int, seed: int) -> list[Pair]:
    """``n`` pairs drawn by a seeded shuffle, kept in manifest order (``n`` <= 0 or >= len: all)."""
    if n <= 0 or n >= len(pairs):
        return pairs
    order = np.random.default_rng(seed).permutation(len(pairs))[:n]
    return [pairs[i] for i in sorted(order)]
