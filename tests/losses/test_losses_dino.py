"""DINO image-level loss (Eq. 1-3): hand-computed value, pair counting, gradients."""

import math

import pytest
import torch

from dermino.losses import dino_loss, dino_loss_terms


def _log_softmax(row, temp):
    z = [v / temp for v in row]
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def _ce(t_row, s_row, temp):
    return -sum(t * lp for t, lp in zip(t_row, _log_softmax(s_row, temp), strict=True))


S = [[[1.0, 0.0, -1.0]], [[0.5, 0.5, 0.0]], [[-1.0, 2.0, 0.0]]]  # 2 global + 1 local, B=1, K=3
T = [[[0.7, 0.2, 0.1]], [[0.1, 0.3, 0.6]]]


def test_dino_loss_golden():
    temp = 0.5
    glob = _ce(T[0][0], S[1][0], temp) + _ce(T[1][0], S[0][0], temp)
    loc = _ce(T[0][0], S[2][0], temp) + _ce(T[1][0], S[2][0], temp)
    n_pairs = 2 * (1 + 1)  # N_g (1 + N_l): the paper's normaliser for N_g = 2
    terms = dino_loss_terms([torch.tensor(s) for s in S], [torch.tensor(t) for t in T], temp)
    assert terms["global"].item() == pytest.approx(glob / n_pairs, rel=1e-6)
    assert terms["local"].item() == pytest.approx(loc / n_pairs, rel=1e-6)
    total = dino_loss([torch.tensor(s) for s in S], [torch.tensor(t) for t in T], temp)
    assert total.item() == pytest.approx((glob + loc) / n_pairs, rel=1e-6)


def test_dino_loss_same_view_pairs_when_not_skipped():
    temp = 0.1
    all_pairs = sum(_ce(T[g][0], S[v][0], temp) for g in range(2) for v in range(3))
    got = dino_loss([torch.tensor(s) for s in S], [torch.tensor(t) for t in T], temp, skip_same_view=False)
    assert got.item() == pytest.approx(all_pairs / 6, rel=1e-6)


def test_dino_loss_batch_mean_and_minimum():
    torch.manual_seed(0)
    t = torch.softmax(torch.randn(4, 8), dim=-1)
    # student logits equal to log(t)*temp reproduce t exactly: the CE is then the entropy of t
    s = torch.log(t) * 0.1
    got = dino_loss([s, s], [t, t], 0.1)
    entropy = -(t * t.log()).sum(-1).mean()
    assert got.item() == pytest.approx(entropy.item(), rel=1e-5)
    assert dino_loss([s + torch.randn_like(s), s], [t, t], 0.1) > got


def test_dino_loss_gradcheck():
    torch.manual_seed(0)
    s = [torch.randn(3, 5, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    t = [torch.softmax(torch.randn(3, 5, dtype=torch.float64), -1) for _ in range(2)]
    assert torch.autograd.gradcheck(lambda *xs: dino_loss(list(xs), t, 0.2), s)


def test_dino_loss_rejects_bad_lists():
    t = [torch.ones(2, 3) / 3]
    with pytest.raises(ValueError, match="no .* pairs"):
        dino_loss([torch.zeros(2, 3)], t)
    with pytest.raises(ValueError, match="shape"):
        dino_loss([torch.zeros(2, 3), torch.zeros(2, 4)], t + t)
    with pytest.raises(ValueError, match="student views"):
        dino_loss([torch.zeros(2, 3)], t + t)
