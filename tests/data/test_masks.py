"""Mask pairs on real PH2 masks: the seeded draw, and the two resizings (model size vs original)."""

from __future__ import annotations

import numpy as np

from dermino.data.manifest import read_manifest
from dermino.data.masks import mask_pairs, model_input, resized_pair, subset_pairs


def test_subset_is_seeded_and_keeps_manifest_order(bundled_manifests):
    pairs = mask_pairs(read_manifest(bundled_manifests["ph2"]), "train")
    a, b = subset_pairs(pairs, 5, seed=0), subset_pairs(pairs, 5, seed=0)
    assert a == b and len(a) == 5 and [p.row for p in a] == sorted(p.row for p in a)
    assert subset_pairs(pairs, 5, seed=1) != a
    assert subset_pairs(pairs, 0, seed=0) == pairs and subset_pairs(pairs, len(pairs) + 1, seed=0) == pairs


def test_resized_pair_and_model_input(bundled_manifests):
    pair = mask_pairs(read_manifest(bundled_manifests["ph2"]), "test")[0]
    x, small = resized_pair(pair, (42, 56), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert x.shape == (3, 42, 56) and small.shape == (42, 56) and small.dtype == bool
    x2, full = model_input(pair, (42, 56), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert np.array_equal(x.numpy(), x2.numpy())  # the same image tensor
    assert full.shape != small.shape and 0 < full.mean() < 1  # the mask at the image's own size
    assert abs(full.mean() - small.mean()) < 0.05  # the same lesion share at both sizes
