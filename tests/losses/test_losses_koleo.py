"""KoLeo regulariser: hand-computed value and gradients."""

import math

import pytest
import torch

from dermino.losses import koleo_loss


def test_koleo_golden():
    # after L2-normalisation: (1,0), (0,1), (1,1)/sqrt2; every nearest-neighbour distance is
    # the chord of 45 degrees: sqrt(2 - 2 cos 45deg)
    x = torch.tensor([[3.0, 0.0], [0.0, 0.5], [2.0, 2.0]])
    d = math.sqrt(2 - 2 * math.cos(math.pi / 4))
    assert koleo_loss(x).item() == pytest.approx(-math.log(d + 1e-8), rel=1e-6)


def test_koleo_loops_reference():
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    rows = [[v / math.sqrt(sum(c * c for c in r)) for v in r] for r in x.tolist()]
    total = 0.0
    for i, a in enumerate(rows):
        nn = min(math.dist(a, b) for j, b in enumerate(rows) if j != i)
        total += -math.log(nn + 1e-8)
    assert koleo_loss(x).item() == pytest.approx(total / 6, rel=1e-5)


def test_koleo_spread_is_lower_than_clumped():
    spread = torch.eye(4)
    clumped = torch.eye(4) * 0.1 + 1.0
    assert koleo_loss(spread) < koleo_loss(clumped)


def test_koleo_gradcheck_and_duplicates():
    torch.manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(koleo_loss, (x,))
    dup = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = koleo_loss(dup)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(dup.grad).all()


def test_koleo_needs_two_samples():
    with pytest.raises(ValueError):
        koleo_loss(torch.randn(1, 4))
