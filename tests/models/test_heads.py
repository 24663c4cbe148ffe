"""DINO / iBOT projection heads: shapes, unit-norm prototypes, freezing the last layer."""

import pytest
import torch

from dermino.models.heads import DINOHead, HeadConfig, IBOTHead, build_heads


def test_head_shapes_and_bounded_logits():
    head = DINOHead(in_dim=32, out_dim=100, hidden_dim=48, bottleneck_dim=16)
    out = head(torch.randn(4, 32))
    assert out.shape == (4, 100)
    assert head(torch.randn(2, 7, 32)).shape == (2, 7, 100)  # patch tokens
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(100), atol=1e-5)
    assert torch.allclose(head.bottleneck(torch.randn(3, 32)).norm(dim=-1), torch.ones(3), atol=1e-5)
    assert out.abs().max() <= 1 + 1e-5  # cosine similarities


def test_weight_norm_gain_is_fixed():
    head = DINOHead(in_dim=8, out_dim=5, hidden_dim=16, bottleneck_dim=4)
    x = torch.randn(3, 8)
    before = head(x)
    with torch.no_grad():
        head.last_layer.weight_v.mul_(7.0)  # scaling v must not change the output (g == 1)
    assert torch.allclose(head(x), before, atol=1e-6)


def test_last_layer_can_be_frozen():
    head = DINOHead(in_dim=8, out_dim=5, hidden_dim=16, bottleneck_dim=4)
    head.set_last_layer_trainable(False)
    head(torch.randn(3, 8)).sum().backward()
    assert all(p.grad is None for p in head.last_layer_parameters())
    assert all(p.grad is not None for p in head.mlp.parameters())
    head.set_last_layer_trainable(True)
    head(torch.randn(3, 8)).pow(2).sum().backward()
    assert head.last_layer.weight_v.grad is not None


def test_build_heads_shared_and_separate():
    cfg = HeadConfig(out_dim=20, hidden_dim=16, bottleneck_dim=8, ibot_out_dim=30)
    dino, ibot = build_heads(12, cfg)
    assert isinstance(ibot, IBOTHead) and dino is not ibot
    assert ibot(torch.randn(1, 12)).shape == (1, 30)
    shared = HeadConfig(out_dim=20, hidden_dim=16, bottleneck_dim=8, ibot_separate_head=False)
    d2, i2 = build_heads(12, shared)
    assert d2 is i2
    with pytest.raises(ValueError):
        build_heads(12, HeadConfig(out_dim=20, ibot_separate_head=False, ibot_out_dim=30))
    one = DINOHead(4, out_dim=3, n_layers=1, bottleneck_dim=2)
    assert len([m for m in one.mlp if isinstance(m, torch.nn.Linear)]) == 1
