"""Heads give logits at the input size for any patch-divisible size; the backbone stays frozen."""

import pytest
import torch

from dermino.models import create
from dermino.segment.config import SegmentConfig
from dermino.segment.heads import (
    LinearHead,
    SegmentationModel,
    UperNetHead,
    backbone_depth,
    build_segmentation_model,
    default_layers,
)

TINY = {"depth": 4, "embed_dim": 64, "num_heads": 2, "img_size": 56}


def _model(head: str) -> SegmentationModel:
    torch.manual_seed(0)
    cfg = SegmentConfig(manifest="unused.csv", backbone="dermino_vit_tiny_14", backbone_overrides=TINY,
                        head=head, upernet_channels=16)
    return build_segmentation_model(cfg)


@pytest.mark.parametrize("head", ["linear", "upernet"])
@pytest.mark.parametrize("hw", [(56, 84), (112, 112), (14, 28)])
def test_output_shape_for_any_patch_multiple(head, hw):
    model = _model(head).train()
    out = model(torch.randn(2, 3, *hw))
    assert out.shape == (2, 2, *hw)
    out.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())


def test_upernet_pyramid_scales():
    head = UperNetHead(in_dim=8, channels=4).eval()
    feats = [torch.randn(1, 8, 4, 6) for _ in range(4)]
    pyramid = [op(f) for op, f in zip(head.rescale, feats, strict=True)]
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    with pytest.raises(ValueError, match="4 feature maps"):
        head(feats[:2], (56, 84))


def test_linear_head_structure_follows_the_paper():
    head = LinearHead(32)
    assert isinstance(head.bn, torch.nn.BatchNorm2d)
    assert isinstance(head.dropout, torch.nn.Dropout2d) and head.dropout.p == 0.1
    assert head.classifier.kernel_size == (1, 1)


def test_default_layers():
    assert default_layers("linear", 12) == [11]
    assert default_layers("upernet", 12) == [2, 5, 8, 11]
    assert default_layers("upernet", 24) == [5, 11, 17, 23]
    assert default_layers("upernet", 2) == [0, 0, 0, 1]
    assert backbone_depth(create("dermino_vit_tiny_14", **TINY)) == 4


def test_frozen_backbone_no_grad_and_eval_mode():
    model = _model("upernet")
    model.train()
    assert not model.backbone.training and model.head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    feats = model.features(torch.randn(1, 3, 28, 28))
    assert all(not f.requires_grad for f in feats)
    assert model.layers == [0, 1, 2, 3]


def test_finetune_backbone_gets_gradients():
    torch.manual_seed(0)
    cfg = SegmentConfig(manifest="unused.csv", backbone="dermino_vit_tiny_14", backbone_overrides=TINY,
                        finetune_backbone=True)
    model = build_segmentation_model(cfg).train()
    assert model.backbone.training
    model(torch.randn(2, 3, 28, 28)).sum().backward()
    assert model.backbone.vit.patch_embed.proj.weight.grad is not None
