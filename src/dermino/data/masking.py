"""iBOT block masking: which patches of a global crop the student must reconstruct.

Random single patches are too easy to infer from their neighbours, so (as in BEiT/iBOT)
masks are unions of rectangles of random area and aspect ratio. For each batch a fraction
of the global crops (default 0.5) is masked, with mask ratios spread evenly over
``[min_ratio, max_ratio]`` (0.1-0.5) so every batch sees easy and hard cases; the others
get an empty mask. Everything is driven by an explicit ``numpy.random.Generator`` so the
collate can reproduce the same masks after a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch

from dermino.config import Probability


@dataclass
class MaskingConfig:
    """iBOT masking settings (DINOv2 recipe by default)."""

    probability: Annotated[float, Probability] = 0.5  # fraction of global crops that get a mask
    min_ratio: Annotated[float, Probability] = 0.1
    max_ratio: Annotated[float, Probability] = 0.5
    min_block_patches: int = 4
    min_aspect: float = 0.3


class BlockMasker:
    """Draws boolean ``(h*w,)`` masks of about ``ratio * h * w`` patches made of rectangles."""

    def __init__(self, grid: tuple[int, int], min_block_patches: int = 4, min_aspect: float = 0.3):
        if grid[0] <= 0 or grid[1] <= 0:
            raise ValueError(f"mask grid must be positive, got {grid}")
        if not 0 < min_aspect <= 1:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        self.h, self.w = grid
        self.min_block = max(1, min_block_patches)
        self.log_aspect = (math.log(min_aspect), -math.log(min_aspect))

    @property
    def n_patches(self) -> int:
        return self.h * self.w

    def _add_block(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> int:
        """Try to mask one new rectangle of at most ``budget`` new patches; returns how many."""
        for _ in range(10):
            area = rng.uniform(self.min_block, max(self.min_block, budget))
            aspect = math.exp(rng.uniform(*self.log_aspect))
            bh = int(round(math.sqrt(area * aspect)))
            bw = int(round(math.sqrt(area / aspect)))
            if not (0 < bh <= self.h and 0 < bw <= self.w):
                continue
            top = int(rng.integers(0, self.h - bh + 1))
            left = int(rng.integers(0, self.w - bw + 1))
            region = mask[top : top + bh, left : left + bw]
            new = int(bh * bw - region.sum())
            if 0 < new <= budget:
                region[:] = True
                return new
        return 0

    def __call__(self, n_masked: int, rng: np.random.Generator) -> torch.Tensor:
        """A mask with about ``n_masked`` True patches (never more), flattened row-major."""
        mask = np.zeros((self.h, self.w), dtype=bool)
        n_masked = min(max(0, n_masked), self.n_patches)
        count = 0
        while count < n_masked:
            added = self._add_block(mask, n_masked - count, rng)
            if added == 0:
                break
            count += added
        if count < n_masked:
            # blocks could not fit the last few patches: fill them at random so the ratio holds
            free = np.flatnonzero(~mask.ravel())
            mask.ravel()[rng.choice(free, size=n_masked - count, replace=False)] = True
        return torch.from_numpy(mask.ravel().copy())


def batch_masks(
    n_crops: int, grid: tuple[int, int], cfg: MaskingConfig, rng: np.random.Generator
) -> torch.Tensor:
    """(n_crops, h*w) bool masks: ``round(probability * n_crops)`` crops masked (at least one when
    probability > 0), ratios spread evenly over [min_ratio, max_ratio], crops chosen at random."""
    if not 0 <= cfg.probability <= 1 or not 0 <= cfg.min_ratio <= cfg.max_ratio <= 1:
        raise ValueError(f"bad masking config {cfg}: need 0<=probability<=1 and 0<=min_ratio<=max_ratio<=1")
    masker = BlockMasker(grid, cfg.min_block_patches, cfg.min_aspect)
    masks = torch.zeros(n_crops, masker.n_patches, dtype=torch.bool)
    n_masked_crops = int(round(cfg.probability * n_crops))
    if cfg.probability > 0:
        n_masked_crops = max(1, n_masked_crops)
    if n_masked_crops == 0:
        return masks
    # one ratio per masked crop, each drawn from its own slice of [min_ratio, max_ratio]
    edges = np.linspace(cfg.min_ratio, cfg.max_ratio, n_masked_crops + 1)
    ratios = [rng.uniform(edges[i], edges[i + 1]) for i in range(n_masked_crops)]
    which = rng.permutation(n_crops)[:n_masked_crops]
    for crop, ratio in zip(which, ratios, strict=True):
        n = max(1, int(round(ratio * masker.n_patches))) if cfg.max_ratio > 0 else 0
        masks[crop] = masker(n, rng)
    return masks
