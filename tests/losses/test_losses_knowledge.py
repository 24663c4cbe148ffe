"""Knowledge-guided supervision (Eq. 5-7): head and masked BCE."""

import math

import pytest
import torch

from dermino.losses import KnowledgeHead, knowledge_loss
from dermino.losses.knowledge import class_prior_floor

LOGITS = [[0.0, 2.0, -1.0], [1.0, 1.0, 1.0], [3.0, 0.0, 0.5]]
TARGETS = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
MASK = [[1, 1, 0], [0, 0, 0], [1, 1, 1]]  # row 1 unlabelled; row 0 cannot express class 2


def _bce(z, y):
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_knowledge_loss_golden():
    per_sample = []
    for z_row, y_row, n_row in zip(LOGITS, TARGETS, MASK, strict=True):
        if sum(n_row):
            per_sample.append(
                sum(_bce(z, y) * n for z, y, n in zip(z_row, y_row, n_row, strict=True)) / sum(n_row)
            )
    expected = sum(per_sample) / len(per_sample)  # mean over the 2 labelled samples
    got = knowledge_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor(MASK))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_out_of_label_space_gets_zero_gradient():
    logits = torch.tensor(LOGITS, requires_grad=True)
    knowledge_loss(logits, torch.tensor(TARGETS), torch.tensor(MASK)).backward()
    outside = torch.tensor(MASK) == 0
    assert (logits.grad[outside] == 0).all()
    assert (logits.grad[~outside] != 0).all()


def test_no_labelled_sample_gives_zero_with_grad():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = knowledge_loss(logits, torch.zeros(4, 3), torch.zeros(4, 3))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (logits.grad == 0).all()


def test_knowledge_loss_stable_and_gradcheck():
    big = torch.tensor([[200.0, -200.0]])
    assert torch.isfinite(knowledge_loss(big, torch.tensor([[0.0, 1.0]]), torch.ones(1, 2)))
    torch.manual_seed(0)
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (3, 4)).double()
    n = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: knowledge_loss(x, y, n), (z,))


def test_knowledge_head_logits_by_hand():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    head = KnowledgeHead(w, in_dim=2, init_scale=2.0)
    assert isinstance(head.proj, torch.nn.Identity)
    cls = torch.tensor([[3.0, -1.0]])
    assert torch.allclose(head(cls), torch.tensor([[6.0, -2.0, 4.0]]))


def test_knowledge_head_frozen_prototypes():
    torch.manual_seed(0)
    head = KnowledgeHead(torch.randn(5, 8), in_dim=16)
    assert isinstance(head.proj, torch.nn.Linear)
    names = {n for n, _ in head.named_parameters()}
    assert "weight" not in names and "log_scale" not in names
    assert "weight" in head.state_dict()
    head(torch.randn(2, 16)).sum().backward()
    assert head.proj.weight.grad is not None and head.weight.grad is None


def test_knowledge_head_trainable_prototypes_and_scale():
    torch.manual_seed(0)
    protos = torch.randn(5, 8)
    head = KnowledgeHead(protos, in_dim=8, trainable=True, learnable_scale=True, init_scale=3.0)
    assert head.scale.item() == pytest.approx(3.0)
    head(torch.randn(2, 8)).pow(2).sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert head.log_scale.grad is not None
    protos.zero_()  # the head keeps its own copy
    assert head.weight.abs().sum() > 0
    with pytest.raises(ValueError):
        KnowledgeHead(torch.randn(5), in_dim=8)


def test_class_prior_floor_golden():
    # Label space {0, 1}: one row each -> p = 1/2, every BCE is ln 2.
    # Label space {0, 2}: three rows of class 0, one of class 2 -> p0 = 3/4, p2 = 1/4;
    # a class-0 row costs -ln 3/4 on both classes, the class-2 row -ln 1/4 on both.
    # The unlabelled row (empty label space) counts for nothing.
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.float)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 1], [1, 0, 1], [1, 0, 1], [0, 0, 0]], dtype=torch.float)
    expected = (2 * math.log(2) - 3 * math.log(0.75) - math.log(0.25)) / 6
    assert class_prior_floor(targets, mask) == pytest.approx(expected, rel=1e-9)
    # no constant predictor does better, e.g. the untrained p = 1/2 everywhere
    assert class_prior_floor(targets, mask) < float(knowledge_loss(torch.zeros(7, 3), targets, mask))
