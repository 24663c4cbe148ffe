"""Sinkhorn-Knopp targets and classic centering: hand-computed values and normalisation."""

import math

import pytest
import torch

from dermino.losses import CenteringSoftmax, sinkhorn_knopp


def test_sinkhorn_one_iteration_by_hand():
    # exp(logits) = [[1, 2], [1, 1]] (samples x prototypes). One iteration, worked on paper:
    # total 5 -> prototype sums .4/.6 -> per-prototype mass 1/2 -> per-sample renormalise.
    logits = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    q = sinkhorn_knopp(logits, temperature=1.0, n_iterations=1)
    expected = torch.tensor([[3 / 7, 4 / 7], [3 / 5, 2 / 5]])
    assert torch.allclose(q, expected, atol=1e-6)


def _sinkhorn_loops(logits, temp, iters):
    """Reference with explicit Python loops over a list-of-lists matrix."""
    n, k = len(logits), len(logits[0])
    q = [[math.exp(logits[i][j] / temp) for j in range(k)] for i in range(n)]
    total = sum(sum(r) for r in q)
    q = [[v / total for v in r] for r in q]
    for _ in range(iters):
        for j in range(k):
            s = sum(q[i][j] for i in range(n))
            for i in range(n):
                q[i][j] /= s * k
        for i in range(n):
            s = sum(q[i])
            for j in range(k):
                q[i][j] /= s * n
    return [[v * n for v in r] for r in q]


def test_sinkhorn_matches_loop_reference():
    logits = [[0.3, -1.2, 2.0, 0.1], [1.5, 0.2, -0.7, 0.0], [0.0, 0.9, 0.4, -2.0]]
    got = sinkhorn_knopp(torch.tensor(logits), temperature=0.5, n_iterations=3)
    assert torch.allclose(got, torch.tensor(_sinkhorn_loops(logits, 0.5, 3)), atol=1e-5)


def test_sinkhorn_rows_and_columns_normalised():
    torch.manual_seed(0)
    logits = torch.randn(64, 16) + torch.linspace(0, 3, 16)  # some prototypes favoured
    q = sinkhorn_knopp(logits, temperature=1.0, n_iterations=3)
    assert torch.allclose(q.sum(dim=1), torch.ones(64), atol=1e-5)
    plain_spread = torch.softmax(logits, dim=1).sum(0).std()
    assert q.sum(0).std() < 0.2 * plain_spread  # columns pulled towards N/K = 4
    q = sinkhorn_knopp(logits, temperature=1.0, n_iterations=200)
    assert torch.allclose(q.sum(dim=0), torch.full((16,), 64 / 16), atol=1e-3)


def test_sinkhorn_stable_for_huge_logits_and_half_input():
    logits = torch.tensor([[1000.0, 999.0], [998.0, 1000.0]])
    q = sinkhorn_knopp(logits, temperature=0.04)
    assert torch.isfinite(q).all()
    assert torch.allclose(q, sinkhorn_knopp(logits - 1000.0, temperature=0.04), atol=1e-6)
    assert sinkhorn_knopp(logits.half(), 1.0).dtype == torch.float32


def test_sinkhorn_rejects_bad_input():
    with pytest.raises(ValueError):
        sinkhorn_knopp(torch.zeros(2, 3, 4), 0.1)
    with pytest.raises(ValueError):
        sinkhorn_knopp(torch.zeros(2, 3), 0.0)


def test_centering_softmax_by_hand():
    c = CenteringSoftmax(out_dim=2, momentum=0.9)
    p0 = c(torch.tensor([[0.0, 0.0]]), 0.5)
    assert torch.allclose(p0, torch.tensor([[0.5, 0.5]]))
    c.update(torch.tensor([[1.0, 3.0], [3.0, 5.0]]))  # batch mean (2, 4) -> center 0.1 * (2, 4)
    assert torch.allclose(c.center, torch.tensor([[0.2, 0.4]]))
    p = c(torch.tensor([[0.0, 0.0]]), 0.5)  # softmax((-0.4, -0.8))
    e0, e1 = math.exp(-0.4), math.exp(-0.8)
    assert torch.allclose(p, torch.tensor([[e0 / (e0 + e1), e1 / (e0 + e1)]]), atol=1e-6)


def test_centering_lazy_size_and_state_dict():
    c = CenteringSoftmax()
    c.update(torch.ones(3, 5))
    assert c.center.shape == (1, 5)
    assert torch.allclose(c.center, torch.full((1, 5), 0.1))
    with pytest.raises(ValueError):
        c(torch.ones(2, 4), 0.1)


def test_sinkhorn_and_centering_under_initialised_process_group(tmp_path):
    import torch.distributed as dist

    logits = torch.randn(8, 5)
    expected = sinkhorn_knopp(logits, 0.3)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert torch.allclose(sinkhorn_knopp(logits, 0.3), expected, atol=1e-6)
        c = CenteringSoftmax(5)
        c.update(logits)
        assert torch.allclose(c.center, 0.1 * logits.mean(0, keepdim=True), atol=1e-6)
    finally:
        dist.destroy_process_group()
