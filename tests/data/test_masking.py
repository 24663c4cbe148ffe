"""iBOT block masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermino.data.masking import BlockMasker, MaskingConfig, batch_masks


@pytest.mark.parametrize("n", [1, 10, 40, 98, 196])
def test_block_mask_has_exact_count(n):
    m = BlockMasker((14, 14))(n, np.random.default_rng(n))
    assert m.dtype == torch.bool and m.shape == (196,)
    assert int(m.sum()) == n


def test_block_masks_are_blocky_not_scattered():
    """Masked patches have masked neighbours far more often than random scattering gives."""
    rng = np.random.default_rng(0)
    masker = BlockMasker((16, 16))
    same = 0
    total = 0
    for _ in range(20):
        m = masker(64, rng).reshape(16, 16)
        right = m[:, :-1] & m[:, 1:]
        same += int(right.sum())
        total += int(m[:, :-1].sum())
    # random 25% masking gives P(right neighbour masked) ~ 0.25; blocks give far more
    assert same / total > 0.5


def test_batch_masks_fraction_and_ratios():
    cfg = MaskingConfig(probability=0.5, min_ratio=0.1, max_ratio=0.5)
    masks = batch_masks(32, (8, 8), cfg, np.random.default_rng(1))
    per_crop = masks.sum(1)
    masked = per_crop > 0
    assert int(masked.sum()) == 16
    ratios = per_crop[masked].float() / 64
    assert ratios.min() >= 0.1 - 1 / 64 and ratios.max() <= 0.5 + 1 / 64
    # spread over the range, not all the same
    assert ratios.max() - ratios.min() > 0.2


def test_batch_masks_reproducible_and_edge_cases():
    cfg = MaskingConfig()
    a = batch_masks(6, (4, 4), cfg, np.random.default_rng(7))
    b = batch_masks(6, (4, 4), cfg, np.random.default_rng(7))
    assert torch.equal(a, b)
    assert batch_masks(4, (4, 4), MaskingConfig(probability=0.0), np.random.default_rng(0)).sum() == 0
    # a single crop with probability > 0 still gets a mask (the iBOT head always has work)
    assert batch_masks(1, (4, 4), MaskingConfig(probability=0.3), np.random.default_rng(0)).sum() > 0
    with pytest.raises(ValueError):
        batch_masks(2, (4, 4), MaskingConfig(min_ratio=0.6, max_ratio=0.5), np.random.default_rng(0))
