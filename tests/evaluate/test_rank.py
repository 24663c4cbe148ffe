"""RankMe against numpy and on matrices whose effective rank is known."""

from __future__ import annotations

import numpy as np
import pytest

from dermino.evaluate.rank import effective_rank


def _numpy_rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def test_matches_numpy():
    z = np.random.default_rng(0).standard_normal((50, 12)) @ np.diag(np.linspace(0.1, 3, 12))
    assert effective_rank(z) == pytest.approx(_numpy_rankme(z), rel=1e-9)


def test_known_ranks():
    assert effective_rank(np.eye(8)) == pytest.approx(8.0, rel=1e-5)  # every direction equally
    one_line = np.outer(np.arange(1, 21), np.ones(6))
    assert effective_rank(one_line) == pytest.approx(1.0, rel=1e-4)  # collapsed onto one direction
    two = np.zeros((10, 4))
    two[:5, 0], two[5:, 1] = 1.0, 1.0
    assert effective_rank(two) == pytest.approx(2.0, rel=1e-5)
    assert effective_rank(np.zeros((3, 3))) == 1.0


def test_rejects_empty_or_flat_input():
    with pytest.raises(ValueError, match="non-empty"):
        effective_rank(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="non-empty"):
        effective_rank(np.zeros(4))
