"""Gram distance to the start, against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermino.data.manifest import read_manifest
from dermino.models import create
from dermino.pretrain.gram_drift import gram_distance, patch_grams


def _numpy_grams(patches: np.ndarray) -> np.ndarray:
    x = patches / np.linalg.norm(patches, axis=-1, keepdims=True)
    return np.einsum("npd,nqd->npq", x, x)


def test_gram_distance_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 5, 8)), rng.normal(size=(3, 5, 8))
    ga, gb = _numpy_grams(a), _numpy_grams(b)
    expected = np.mean([np.sqrt(((gb[i] - ga[i]) ** 2).sum()) for i in range(3)])
    got = gram_distance(torch.from_numpy(ga).float(), torch.from_numpy(gb).float())
    assert got == pytest.approx(expected, rel=1e-6)
    assert gram_distance(torch.from_numpy(ga), torch.from_numpy(ga)) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        gram_distance(torch.from_numpy(ga), torch.from_numpy(gb[:2]))


def test_patch_grams_are_cosines_of_the_last_blocks_patch_tokens(bundled_manifests):
    df = read_manifest(bundled_manifests["ph2"]).head(3)
    torch.manual_seed(0)
    model = create("dermino_vit_tiny_14", depth=2, embed_dim=64, num_heads=2, img_size=56)
    grams = patch_grams(model, df, 56, torch.device("cpu"))
    assert grams.shape == (3, 16, 16)
    from dermino.data.images import read_rgb
    from dermino.data.manifest import resolve
    from dermino.data.transforms import eval_transform

    tf = eval_transform(56, mean=model.mean, std=model.std)
    x = torch.stack([tf(read_rgb(resolve(df, p))) for p in df["image"]])
    with torch.no_grad():
        tokens = model.forward_features(x)["patch"].numpy()  # (3, 16, 64): the last block, normalised
    np.testing.assert_allclose(grams.numpy(), _numpy_grams(tokens.astype(np.float64)), atol=1e-5)
