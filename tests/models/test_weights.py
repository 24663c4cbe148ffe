"""Weight loading/conversion: dermino, DINOv2-official and timm formats, export for timm."""

import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from dermino.models import create
from dermino.models.weights import (
    WeightsError,
    export_backbone,
    load_exported,
    load_weights,
    to_dinov2_state_dict,
)

TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    m = create("dermino_vit_small_14", **{**TINY, **kw}).eval()
    with torch.no_grad():  # make layer-scale and tokens non-trivial so outputs depend on weights
        for name, p in m.named_parameters():
            if "gamma" in name or "token" in name or "pos_embed" in name:
                p.normal_(0, 0.5)
    return m


def _feats(m, x, masks=None):
    with torch.no_grad():
        return m.forward_features(x, masks)


def test_dermino_nested_checkpoint_roundtrip(tmp_path):
    src, dst = _model(0), _model(1)
    ckpt = {
        "teacher": {
            **{f"backbone.{k}": v for k, v in src.state_dict().items()},
            "dino_head.mlp.0.weight": torch.zeros(2),
        },
        "epoch": 3,
    }
    torch.save(ckpt, tmp_path / "ckpt.pth")
    report = load_weights(dst, tmp_path / "ckpt.pth")
    assert report.format == "dermino" and not report.missing and not report.unexpected
    assert "dino_head.mlp.0.weight" in report.ignored
    x = torch.randn(2, 3, 28, 28)
    masks = torch.tensor([[True, False, True, False]] * 2)
    assert torch.allclose(_feats(src, x, masks)["patch"], _feats(dst, x, masks)["patch"], atol=1e-6)


def test_safetensors_and_module_prefix(tmp_path):
    src, dst = _model(0), _model(1)
    save_file(
        {f"module.{k}": v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    load_weights(dst, tmp_path / "w.safetensors")
    x = torch.randn(1, 3, 28, 28)
    assert torch.allclose(_feats(src, x)["cls"], _feats(dst, x)["cls"], atol=1e-6)


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_format_roundtrip(tmp_path, registers):
    src, dst = _model(0, num_register_tokens=registers), _model(1, num_register_tokens=registers)
    sd = to_dinov2_state_dict(src)
    n = (28 // 14) ** 2
    assert sd["pos_embed"].shape == (1, 1 + n, 64)  # DINOv2: class-token entry included
    assert "blocks.1.ls2.gamma" in sd and "blocks.0.attn.qkv.weight" in sd and "mask_token" in sd
    assert ("register_tokens" in sd) == bool(registers)
    torch.save(sd, tmp_path / "dinov2.pth")
    report = load_weights(dst, tmp_path / "dinov2.pth")
    assert report.format == "dinov2"
    x = torch.randn(2, 3, 28, 28)
    masks = torch.tensor([[False, True, True, False]] * 2)
    a, b = _feats(src, x, masks), _feats(dst, x, masks)
    assert torch.allclose(a["cls"], b["cls"], atol=1e-5) and torch.allclose(a["patch"], b["patch"], atol=1e-5)


def test_dinov2_training_checkpoint_with_block_chunks():
    src, dst = _model(0), _model(1)
    sd = to_dinov2_state_dict(src)
    chunked = {"teacher": {f"backbone.{k.replace('blocks.', 'blocks.0.')}": v for k, v in sd.items()}}
    chunked["teacher"]["dino_head.last_layer.weight_v"] = torch.zeros(3, 2)
    load_weights(dst, chunked)
    x = torch.randn(1, 3, 28, 28)
    assert torch.allclose(_feats(src, x)["patch"], _feats(dst, x)["patch"], atol=1e-5)


def test_dinov2_pos_embed_interpolated_to_model_grid(tmp_path):
    # an "official" 518 px checkpoint (37 x 37 grid) loaded into a 28 px model
    big = _model(0, img_size=518)
    sd = to_dinov2_state_dict(big)
    assert sd["pos_embed"].shape == (1, 1 + 37 * 37, 64)
    small = _model(1)
    report = load_weights(small, sd)
    assert report.resampled_pos_embed
    assert small.vit.pos_embed.shape == (1, 1 + 4, 64)
    # same as the big model resampling on the fly at 28 px (timm's dynamic size path)
    x = torch.randn(1, 3, 28, 28)
    assert torch.allclose(_feats(big, x)["cls"], _feats(small, x)["cls"], atol=1e-4)


def test_timm_checkpoint_with_classifier(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model(
        "vit_small_patch14_dinov2",
        pretrained=False,
        num_classes=5,
        embed_dim=64,
        depth=2,
        num_heads=2,
        img_size=28,
    ).eval()
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "timm.pt")
    dst = _model(3)
    report = load_weights(dst, tmp_path / "timm.pt")
    assert report.format == "timm"
    assert "head.weight" in report.ignored and any("mask_token" in k for k in report.ignored)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features(x), pre_logits=True)
    assert torch.allclose(dst(x), expected, atol=1e-5)


def test_strict_errors_name_the_keys(tmp_path):
    sd = _model(0).state_dict()
    missing = {k: v for k, v in sd.items() if k != "vit.blocks.1.mlp.fc2.bias"}
    with pytest.raises(WeightsError, match=r"vit\.blocks\.1\.mlp\.fc2\.bias"):
        load_weights(_model(1), missing)
    extra = {**sd, "vit.blocks.7.norm1.weight": torch.ones(64)}
    with pytest.raises(WeightsError, match=r"blocks\.7\.norm1\.weight"):
        load_weights(_model(1), extra)
    report = load_weights(_model(1), extra, strict=False)
    assert report.unexpected == ["blocks.7.norm1.weight"]
    wrong = _model(0, embed_dim=32).state_dict()
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_weights(_model(1), wrong)
    with pytest.raises(FileNotFoundError):
        load_weights(_model(1), tmp_path / "absent.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pth"):
        load_weights(_model(1), tmp_path / "bad.pth")


@pytest.mark.parametrize("registers", [0, 4])
def test_export_loads_in_plain_timm(tmp_path, registers):
    src = _model(0, num_register_tokens=registers)
    out = export_backbone(src, tmp_path / "export")
    cfg = json.loads((out / "config.json").read_text())
    model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"]).eval()
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        got = model.forward_head(model.forward_features(x), pre_logits=True)
    assert torch.allclose(got, src(x), atol=1e-5)
    local = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.allclose(local(x), src(x), atol=1e-5)
    back = load_exported(out)
    masks = torch.tensor([[True, False, False, True]] * 2)
    assert torch.allclose(_feats(back, x, masks)["patch"], _feats(src, x, masks)["patch"], atol=1e-5)


def test_create_with_weights_for_baselines(tmp_path):
    src = _model(0)
    torch.save(to_dinov2_state_dict(src), tmp_path / "dinov2_vits14_pretrain.pth")
    m = create("dinov2_vits14", weights=str(tmp_path / "dinov2_vits14_pretrain.pth"), **TINY).eval()
    x = torch.randn(1, 3, 28, 28)
    assert torch.allclose(m(x), src(x), atol=1e-5)

    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    r = create("resnet50", weights=str(tmp_path / "r50.pth")).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref.fc = torch.nn.Identity()
        assert torch.allclose(r(x), ref(x), atol=1e-5)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="missing"):
        create("resnet50", weights=str(tmp_path / "partial.pth"))


@pytest.mark.parametrize("registers", [0, 4])
def test_create_keeps_the_checkpoint_grid(tmp_path, registers):
    """create(weights=...) builds the model at the checkpoint's own grid: the position
    embeddings load unchanged (no resampling), and inputs of other sizes interpolate once."""
    src = _model(0, img_size=42, num_register_tokens=registers)  # 3 x 3 grid
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    loaded = create("dermino_vit_small_14", weights=str(path),
                    **{k: v for k, v in TINY.items() if k != "img_size"}, num_register_tokens=registers).eval()
    assert loaded.spec.img_size == 42
    assert torch.equal(loaded.vit.pos_embed, src.vit.pos_embed)
    x = torch.randn(2, 3, 70, 56)
    assert torch.allclose(_feats(src, x)["cls"], _feats(loaded, x)["cls"], atol=1e-6)
    # an explicit img_size still wins (and then resamples)
    resized = create("dermino_vit_small_14", weights=str(path), **TINY, num_register_tokens=registers)
    assert resized.spec.img_size == 28


def test_open_clip_tower_loads_a_whole_clip_checkpoint(tmp_path):
    """A full CLIP state dict (image and text towers, as open_clip saves it) loads into the
    image tower alone: every visual weight (its own positional embedding included) is used,
    the text side is dropped, and the features equal open_clip's own encode_image."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    torch.save(ref.state_dict(), tmp_path / "clip.pt")
    torch.manual_seed(1)  # a different random init, so only loading can make them agree
    tower = create("open_clip:ViT-S-32", weights=str(tmp_path / "clip.pt")).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(tower(x), ref.encode_image(x))
        assert tower.forward_features(x)["patch"].shape == (2, 49, tower.visual.transformer.width)
