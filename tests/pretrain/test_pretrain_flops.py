"""The analytic FLOP count behind MFU agrees with PyTorch's own counter, and MFU stays a fraction."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dermino.models import create
from dermino.pretrain.config import HeadConfig
from dermino.pretrain.flops import (
    cpu_peak_tflops,
    head_forward_flops,
    pretrain_flops_per_image,
    vit_forward_flops,
)
from dermino.pretrain.model import build_heads


def _measured(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("registers", [0, 4])
def test_vit_forward_flops_match_the_flop_counter(registers):
    model = create("dermino_vit_tiny_14", img_size=56, depth=2, num_register_tokens=registers).eval()
    for block in model.vit.blocks:
        block.attn.fused_attn = False  # explicit q @ k^T and attn @ v, which the counter sees
    x = torch.randn(1, 3, 56, 56)
    prefix = 1 + registers
    expected = vit_forward_flops(16 + prefix, model.embed_dim, 2, n_prefix=prefix)
    assert _measured(lambda: model.forward_features(x)) == pytest.approx(expected, rel=1e-9)


def test_head_forward_flops_match_the_flop_counter():
    cfg = HeadConfig(out_dim=300, hidden_dim=64, bottleneck_dim=16, n_layers=3)
    dino_head, _ = build_heads(32, cfg)
    expected = head_forward_flops(32, 64, 16, 300, 3)
    assert _measured(lambda: dino_head(torch.randn(1, 32))) == pytest.approx(expected, rel=0.01)


def test_recipe_cost_and_cpu_peak():
    # ViT-B/14, 2 x 224 + 8 x 98 crops, 65,536 prototypes: about half a TFLOP per image
    assert 0.4e12 < pretrain_flops_per_image(768, 12, 224, 98, 8) < 0.6e12
    one, two = cpu_peak_tflops(1), cpu_peak_tflops(2)
    assert two == pytest.approx(2 * one) and 0.001 < one < 10
