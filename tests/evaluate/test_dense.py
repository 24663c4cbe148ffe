"""The closed-form dense probe: the ridge solution against numpy, patch targets, and a real fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermino.data.manifest import read_manifest
from dermino.data.masks import mask_pairs
from dermino.evaluate.dense import dense_dice, fit_ridge, lesion_fractions
from dermino.models import create


def _numpy_ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """Ridge on standardised columns with an unpenalised intercept, mapped back to raw features."""
    mu, sd = x.mean(0), x.std(0, ddof=1)
    z = (x - mu) / sd
    n = len(y)
    w = np.linalg.solve(z.T @ z / n + ridge * np.eye(x.shape[1]), z.T @ (y - y.mean()) / n) / sd
    return w, float(y.mean() - mu @ w)


def test_fit_ridge_matches_numpy_and_recovers_a_linear_map():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 7, 4, 3, generator=gen) * torch.linspace(0.5, 3.0, 7).view(1, 7, 1, 1) + 2.0
    true_w = torch.randn(7, generator=gen)
    target = torch.einsum("ndhw,d->nhw", feats, true_w) + 0.3
    x = feats.permute(0, 2, 3, 1).reshape(-1, 7).double().numpy()
    for ridge in (1e-2, 1.0):
        probe = fit_ridge(feats, target, ridge)
        w, b = _numpy_ridge(x, target.reshape(-1).double().numpy(), ridge)
        np.testing.assert_allclose(probe.weight.numpy(), w, rtol=1e-9, atol=1e-12)
        assert probe.bias == pytest.approx(b, rel=1e-9)
    exact = fit_ridge(feats, target, 1e-12)  # (almost) no penalty: the generating map
    np.testing.assert_allclose(exact.weight.numpy(), true_w.double().numpy(), rtol=1e-5)
    assert exact.bias == pytest.approx(0.3, abs=1e-5)
    # lesion_logit is the score minus the 0.5 threshold
    np.testing.assert_allclose(exact.lesion_logit(feats).numpy(), (target - 0.5).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="do not match"):
        fit_ridge(feats, target[:4], 1.0)


def test_lesion_fractions_average_each_patch():
    masks = torch.zeros(1, 4, 6, dtype=torch.bool)
    masks[0, :2, :3] = True  # the top-left patch of a 2x2 grid of 2x3 patches
    masks[0, 2, 3] = True  # one pixel of the bottom-right patch
    np.testing.assert_allclose(lesion_fractions(masks, (2, 2))[0].numpy(), [[1.0, 0.0], [0.0, 1 / 6]])


def test_probe_on_real_masks_beats_chance(bundled_manifests):
    df = read_manifest(bundled_manifests["ph2"])
    fit, score = mask_pairs(df, "train")[:12], mask_pairs(df, "test")[:8]
    torch.manual_seed(0)
    model = create("dermino_vit_tiny_14", depth=2, embed_dim=64, num_heads=2, img_size=56)
    dice = dense_dice(model, fit, score, (56, 56))
    assert 0.0 <= dice <= 1.0
    # the probe reads colour and position even from random patch embeddings: PH2 lesions are dark and central
    assert dice > 0.3
