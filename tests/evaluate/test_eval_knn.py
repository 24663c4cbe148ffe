"""kNN agrees with a brute-force reference: neighbours, majority vote, tie-break, probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from dermino.evaluate.knn import KNNConfig, knn_classify, vote


def _brute(train, ty, test, k, c, t):
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds, probs = [], []
    for row in b:
        sims = a @ row
        order = np.argsort(-sims, kind="stable")[:k]
        votes = {}
        for rank, j in enumerate(order):
            cnt, ssum, first = votes.get(ty[j], (0, 0.0, rank))
            votes[ty[j]] = (cnt + 1, ssum + sims[j], first)
        best = max(votes, key=lambda cl: (votes[cl][0], votes[cl][1], -votes[cl][2]))
        preds.append(best)
        w = np.exp(sims[order] / t)
        p = np.zeros(c)
        for j, wj in zip(order, w, strict=True):
            p[ty[j]] += wj
        probs.append(p / p.sum())
    return np.array(preds), np.array(probs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(300, 16)).astype(np.float32)
    ty = rng.integers(0, 4, size=300)
    test = rng.normal(size=(57, 16)).astype(np.float32)
    out = knn_classify(train, ty, test, 4, KNNConfig(k=5, chunk_size=10))
    ref_pred, ref_probs = _brute(train, ty, test, 5, 4, 0.07)
    np.testing.assert_array_equal(out.pred, ref_pred)
    np.testing.assert_allclose(out.probs, ref_probs, rtol=1e-4, atol=1e-6)
    assert (np.diff(out.similarities, axis=1) <= 1e-6).all()  # nearest first


def test_tie_broken_by_similarity():
    # votes 2-2-1 between classes 0 and 1: class 1's voters are more similar in total
    labels = np.array([[0, 1, 1, 0, 2]])
    sims = np.array([[0.9, 0.85, 0.84, 0.1, 0.05]])
    pred, probs = vote(labels, sims, 3, 0.07)
    assert pred[0] == 1
    assert probs[0].argmax() == 0 or probs[0].argmax() == 1
    assert probs.sum() == pytest.approx(1.0)


def test_majority_beats_nearest():
    labels = np.array([[0, 1, 1, 1, 0]])
    sims = np.array([[0.99, 0.5, 0.4, 0.3, 0.2]])
    pred, probs = vote(labels, sims, 2, 0.07)
    assert pred[0] == 1  # 3 votes beat the single nearest
    assert probs[0, 0] > probs[0, 1]  # but the weighted score favours the near neighbours


def test_bad_input():
    with pytest.raises(ValueError, match="labels"):
        knn_classify(np.zeros((3, 2)), np.zeros(2), np.zeros((1, 2)), 2)
