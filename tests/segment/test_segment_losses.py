"""Dice + cross-entropy: golden values computed by hand, and gradients."""

import math

import pytest
import torch

from dermino.segment.losses import DiceCELoss, soft_dice_loss

# two pixels: p(lesion) = 0.5 and 0.75; truth: lesion, background
LOGITS = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])  # (1, 2, 1, 2)
TARGET = torch.tensor([[[1, 0]]])


def test_soft_dice_golden():
    # inter = 0.5, sum p = 1.25, sum g = 1
    assert soft_dice_loss(LOGITS, TARGET, eps=0.0).item() == pytest.approx(1 - 1.0 / 2.25, abs=1e-6)
    assert soft_dice_loss(LOGITS, TARGET, eps=1.0).item() == pytest.approx(1 - 2.0 / 3.25, abs=1e-6)


def test_dice_ce_golden():
    ce = (-math.log(0.5) - math.log(0.25)) / 2
    dice = 1 - 2.0 / 3.25
    assert DiceCELoss(1.0, 1.0)(LOGITS, TARGET).item() == pytest.approx(ce + dice, abs=1e-6)
    assert DiceCELoss(0.0, 2.0)(LOGITS, TARGET).item() == pytest.approx(2 * ce, abs=1e-6)


def test_perfect_prediction_and_all_background_batch():
    target = torch.tensor([[[1, 0], [0, 0]]])
    logits = torch.stack([(1 - target) * 20.0, target * 20.0], dim=1).float()
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros_like(target)
    bg = torch.stack([torch.full((1, 2, 2), 20.0), torch.zeros(1, 2, 2)], dim=1)
    assert soft_dice_loss(bg, empty).item() == pytest.approx(0.0, abs=1e-6)  # eps keeps it defined


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(2, 3, 4) > 0.5).long()
    assert torch.autograd.gradcheck(lambda x: soft_dice_loss(x, target), (logits,))
    assert torch.autograd.gradcheck(lambda x: DiceCELoss()(x, target), (logits,))


def test_gradient_pushes_lesion_up_on_lesion_pixels():
    logits = torch.zeros(1, 2, 1, 2, requires_grad=True)
    DiceCELoss()(logits, TARGET).backward()
    g = logits.grad[0, 1, 0]
    assert g[0] < 0 < g[1]  # descending raises the lesion logit where truth is lesion


def test_bad_shapes():
    with pytest.raises(ValueError, match="B, 2"):
        soft_dice_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="does not match"):
        soft_dice_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2))
