"""Gram anchoring against an independent numpy computation, its gradient, and the grid resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermino.losses.gram import gram_loss, gram_matrices, resize_patch_grid


def _numpy_gram_loss(s: np.ndarray, t: np.ndarray, remove: str) -> float:
    """The loss written out image by image and pair by pair."""
    total, count = 0.0, 0
    for xs, xt in zip(s, t, strict=True):
        xs = xs / np.linalg.norm(xs, axis=1, keepdims=True)
        xt = xt / np.linalg.norm(xt, axis=1, keepdims=True)
        for i in range(len(xs)):
            for j in range(len(xs)):
                a, b = float(xs[i] @ xs[j]), float(xt[i] @ xt[j])
                if remove in ("both", "target"):
                    b = max(b, 0.0)
                if remove == "both":
                    a = max(a, 0.0)
                total += (a - b) ** 2
                count += 1
    return total / count


@pytest.mark.parametrize("remove", ["both", "target", "none"])
def test_gram_loss_matches_numpy(remove):
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((3, 9, 5)), rng.standard_normal((3, 9, 5))
    got = gram_loss(torch.from_numpy(s), torch.from_numpy(t), remove)
    assert got.item() == pytest.approx(_numpy_gram_loss(s, t, remove), rel=1e-10)


def test_hand_worked_example():
    # two patches: student at 90 degrees (cos 0), teacher identical patches (cos 1): off-diagonal
    # differences of 1 in 2 of 4 entries -> mean 0.5
    s = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    t = torch.tensor([[[3.0, 0.0], [1.0, 0.0]]])
    assert gram_loss(s, t, "none").item() == pytest.approx(0.5)
    assert torch.allclose(gram_matrices(s), torch.eye(2).unsqueeze(0))


def test_zero_when_the_gram_teacher_is_the_student():
    x = torch.randn(2, 16, 8)
    for remove in ("both", "none"):
        assert gram_loss(x, x.clone(), remove).item() == pytest.approx(0.0, abs=1e-10)
    # clipping only the teacher's negatives leaves the student's: not zero unless none are negative
    assert gram_loss(x, x.clone(), "target").item() > 0
    assert gram_loss(x.abs(), x.abs(), "target").item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_by_gradcheck_and_none_for_the_teacher():
    s = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: gram_loss(a, t, "none"), (s,))
    gram_loss(s, t, "both").backward()
    assert t.grad is None and s.grad is not None


def test_half_precision_is_scored_in_float32_and_shapes_must_match():
    x = torch.randn(1, 4, 8, dtype=torch.bfloat16)
    assert gram_loss(x, x.float() + 0.1).dtype == torch.float32
    with pytest.raises(ValueError, match="resize"):
        gram_loss(torch.randn(1, 4, 8), torch.randn(1, 16, 8))


def test_resize_patch_grid_is_bilinear_and_keeps_constant_fields():
    const = torch.ones(2, 16, 3) * torch.tensor([1.0, 2.0, 3.0])
    out = resize_patch_grid(const, (2, 2))
    assert out.shape == (2, 4, 3) and torch.allclose(out, torch.ones(2, 4, 3) * torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(1, 16, 5)
    assert resize_patch_grid(x, (4, 4)) is x
    ref = torch.nn.functional.interpolate(x.transpose(1, 2).reshape(1, 5, 4, 4), size=(2, 2), mode="bilinear",
                                          align_corners=False).reshape(1, 5, 4).transpose(1, 2)
    assert torch.allclose(resize_patch_grid(x, (2, 2)), ref)
    with pytest.raises(ValueError, match="square"):
        resize_patch_grid(torch.randn(1, 6, 2), (2, 2))
