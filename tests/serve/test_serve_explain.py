"""Attention maps checked against timm's own (unfused) attention, and rollout's definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _serve_fixtures import TINY, ham_images
from dermino.cli import main
from dermino.data.images import read_rgb
from dermino.features import EvalTransform
from dermino.models import create
from dermino.serve.explain import attention_maps, crop_box, explain_image, overlay, select_map


def _timm_attention(backbone, x):
    """Reference: timm's explicit softmax(qk^T) path, captured at its attn_drop input."""
    seen = []
    hooks = []
    for block in backbone.vit.blocks:
        block.attn.fused_attn = False
        hooks.append(block.attn.attn_drop.register_forward_hook(lambda m, i, o: seen.append(i[0].detach())))
    with torch.no_grad():
        backbone.forward_features(x)
    for h in hooks:
        h.remove()
    return seen


def test_cls_attention_matches_timm_and_rollout_its_definition():
    torch.manual_seed(0)
    bb = create("dermino_vit_tiny_14", **{**TINY, "depth": 1}).eval()
    x = torch.randn(2, 3, 56, 56)
    maps = attention_maps(bb, x)
    (ref,) = _timm_attention(bb, x)  # (B, heads, N, N)
    np.testing.assert_allclose(maps["cls"].reshape(2, 2, -1).numpy(), ref[:, :, 0, 1:].numpy(), atol=1e-6)
    # one block: rollout = normalise(mean_heads(A) + I); its CLS row over patches = mean(A)[0, 1:] / 2
    np.testing.assert_allclose(maps["rollout"].reshape(2, -1).numpy(), ref.mean(1)[:, 0, 1:].numpy() / 2, atol=1e-6)


def test_rollout_over_depth_is_a_distribution():
    torch.manual_seed(1)
    bb = create("dermino_vit_tiny_14", **TINY).eval()
    maps = attention_maps(bb, torch.randn(1, 3, 56, 56))
    assert maps["cls"].shape == (1, 2, 4, 4) and maps["rollout"].shape == (1, 4, 4)
    assert (maps["rollout"] > 0).all() and maps["rollout"].sum() < 1  # the rest stays on the CLS token
    assert select_map(maps, "cls", 1).shape == (4, 4)
    with pytest.raises(ValueError, match="head"):
        select_map(maps, "cls", 2)


def test_crop_box_golden_and_overlay_size():
    t = EvalTransform(56, 56, (0.5,) * 3, (0.5,) * 3)
    # 200x150 -> 74x56 (torchvision's Resize truncates 74.67), crop 56 from x=round(9.0)=9:
    # in original pixels x from 9/0.37 = 24.32 to 65/0.37 = 175.68, full height
    left, top, right, bottom = crop_box(t, (200, 150))
    assert (top, bottom) == (0.0, 150.0)
    assert left == pytest.approx(24.324, abs=1e-3) and right == pytest.approx(175.676, abs=1e-3)
    # squash: the whole image is the crop
    squash = EvalTransform(56, 56, (0.5,) * 3, (0.5,) * 3, "bicubic", "squash").crop_box((200, 150))
    assert squash == pytest.approx((0, 0, 200, 150))
    image = read_rgb(ham_images(1)[0])
    ov = overlay(image, np.arange(16.0).reshape(4, 4), (left, top, right, bottom))
    assert ov.size == image.size
    a = np.asarray(ov, dtype=float)
    b = np.asarray(image, dtype=float)
    np.testing.assert_allclose(a[:, :20], b[:, :20] * 0.45, atol=1)  # outside the crop: only dimmed


def test_explain_cli_writes_pngs(tmp_path):
    from _serve_fixtures import tiny_classifier
    from dermino.classifier.model import save_classifier

    folder = save_classifier(tiny_classifier(), tmp_path / "clf")
    image = ham_images(1)[0]
    assert main(["explain", str(image), "--classifier", str(folder), "--out", str(tmp_path / "x")]) == 0
    names = sorted(p.name for p in (tmp_path / "x").glob("*.png"))
    assert names == [f"{image.stem}_{t}.png" for t in ("cls_head0", "cls_head1", "cls_mean", "rollout")]
    ov, heat, heads = explain_image(tiny_classifier().backbone, tiny_classifier().transform, read_rgb(image))
    assert heads == 2 and heat.shape == (4, 4) and ov.size == (200, 150)
