"""iBOT patch loss (Eq. 4): mask weights, hand-computed value, gradients."""

import math

import pytest
import torch

from dermino.losses import ibot_loss, masked_patch_weights


def test_masked_patch_weights():
    masks = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    w, idx = masked_patch_weights(masks)
    assert w.tolist() == [0.5, 0.5, 1.0]
    assert idx.tolist() == [0, 1, 8]
    tokens = torch.arange(12).reshape(3, 4)
    assert tokens.flatten()[idx].tolist() == [0, 1, 8]


def test_ibot_loss_golden():
    # image 0 has two masked patches, image 2 one; image 1 none (3 images in the denominator)
    s = [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    t = [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]
    w = [0.5, 0.5, 1.0]
    temp = 0.5
    total = 0.0
    for srow, trow, wi in zip(s, t, w, strict=True):
        z = [v / temp for v in srow]
        lse = math.log(sum(math.exp(v) for v in z))
        total += wi * -sum(tk * (zk - lse) for tk, zk in zip(trow, z, strict=True))
    got = ibot_loss(torch.tensor(s), torch.tensor(t), torch.tensor(w), n_images=3, student_temperature=temp)
    assert got.item() == pytest.approx(total / 3, rel=1e-6)


def test_ibot_each_image_counts_equally():
    # two images with identical per-patch CE but 1 vs 4 masked patches contribute equally
    masks = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    w, _ = masked_patch_weights(masks)
    s = torch.tensor([[1.0, 0.0]]).repeat(5, 1)
    t = torch.tensor([[0.3, 0.7]]).repeat(5, 1)
    one = ibot_loss(s[:1], t[:1], torch.ones(1), n_images=1)
    assert ibot_loss(s, t, w, n_images=2).item() == pytest.approx(one.item(), rel=1e-6)


def test_ibot_gradcheck():
    torch.manual_seed(0)
    s = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1)
    w = torch.tensor([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: ibot_loss(x, t, w, n_images=4, student_temperature=0.1), (s,))


def test_ibot_rejects_bad_shapes():
    with pytest.raises(ValueError):
        ibot_loss(torch.zeros(3, 2), torch.zeros(3, 3), torch.ones(3), 1)
    with pytest.raises(ValueError):
        ibot_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(2), 1)
    with pytest.raises(ValueError):
        masked_patch_weights(torch.zeros(4, dtype=torch.bool))
