"""Every registered comparator loads its *published* file layout with every key placed.

For each entry: build the model with its own library (not through dermino), write a
checkpoint the way its publisher stores it (prefixes, wrappers, the upstream key names),
load it with ``dermino.load(name, weights=FILE)`` and check zero missing / unexpected keys
and the same outputs as the library model; text towers give unit-norm embeddings equal to
the library's ``encode_text``. ``test_every_registered_backbone_has_a_layout_test`` keeps the
table below and the registry in step. Architectures are built small through the library's
own config (same code, fewer layers / pixels) where the real size would be slow on CPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file

import dermino
from dermino.models import list_backbones
from dermino.models.baselines import CARDS, check_published_sha256
from dermino.models.registry import lookup, tiny_overrides
from dermino.models.text import text_tower
from dermino.models.weights import WeightsError, load_weights

open_clip = pytest.importorskip("open_clip")


def _x(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def _randomise(module: torch.nn.Module, seed: int = 1) -> None:
    """Every parameter random (zero-initialised biases, layer scales, tokens included), so
    only a correct load can reproduce the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _load(name, path, **kw):
    """dermino.load with the registry's tiny overrides; returns (backbone, LoadReport of a second strict load)."""
    over = {**tiny_overrides(name), **kw}
    with warnings.catch_warnings():  # random test files never match a published sha256
        warnings.filterwarnings("ignore", message=".*differs from the .* file its publisher states")
        model = dermino.load(name, weights=path, **over).backbone
    report = load_weights(model, path, strict=True)
    if name in CARDS:  # the built model carries its card's preprocessing record
        assert model.preprocess == CARDS[name].preprocess is not None
    return model, report


# --- torchvision ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [pytest.param("resnext101_32x8d", marks=pytest.mark.slow), "resnet50",
                                  "resnext50_32x4d"])
def test_torchvision_file(tmp_path, name):
    import torchvision

    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / f"{name}.pth")  # torchvision's hub file: the plain state dict
    model, report = _load(name, tmp_path / f"{name}.pth")
    assert not report.missing and not report.unexpected
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]  # the ImageNet classifier, reported
    ref.fc = torch.nn.Identity()
    x = _x(64, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


# --- timm ------------------------------------------------------------------------------------
def test_vit_base_patch16_224_timm_file(tmp_path):
    import timm

    kw = tiny_overrides("vit_base_patch16_224")
    ref = timm.create_model("vit_base_patch16_224", pretrained=False, **kw).eval()  # with its 1000-class head
    _randomise(ref)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    model, report = _load("vit_base_patch16_224", tmp_path / "model.safetensors")
    assert not report.missing and not report.unexpected and set(report.ignored) == {"head.weight", "head.bias"}
    x = _x(32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref.forward_head(ref.forward_features(x), pre_logits=True))


def _meta_dinov3_state(ref: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm's DINOv3 weights written back in Meta's file layout (facebookresearch/dinov3
    dinov3/models/vision_transformer.py + layers/: ``storage_tokens``, ``mask_token``,
    ``rope_embed.periods``, ``blocks.N.attn.qkv.{bias,bias_mask}``, ``blocks.N.ls{1,2}.gamma``)."""
    out: dict[str, torch.Tensor] = {}
    sd = ref.state_dict()
    dim = sd["cls_token"].shape[-1]
    for k, v in sd.items():
        if k.endswith("attn.q_bias"):
            base = k.removesuffix("q_bias")
            vb = sd[base + "v_bias"]
            out[base + "qkv.bias"] = torch.cat([v, torch.randn_like(v), vb])  # k part is masked upstream
            out[base + "qkv.bias_mask"] = torch.cat([torch.ones_like(v), torch.zeros_like(v), torch.ones_like(v)])
        elif k.endswith("attn.v_bias"):
            continue
        else:
            k = k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma").replace("reg_token", "storage_tokens")
            out[k] = v.clone()
    out["mask_token"] = torch.zeros(1, dim)
    out["rope_embed.periods"] = torch.ones(dim // ref.blocks[0].attn.num_heads // 4)
    return out


@pytest.mark.parametrize("name,arch", [("dinov3_vits16", "vit_small_patch16_dinov3_qkvb"),
                                       ("dinov3_vitb16", "vit_base_patch16_dinov3_qkvb"),
                                       ("dinov3_vitl16", "vit_large_patch16_dinov3_qkvb")])
def test_dinov3_meta_file(tmp_path, name, arch):
    import timm

    kw = tiny_overrides(name)
    ref = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="token", **kw).eval()
    _randomise(ref)
    sd = _meta_dinov3_state(ref)
    assert "storage_tokens" in sd and "blocks.0.ls1.gamma" in sd and "blocks.1.attn.qkv.bias_mask" in sd
    torch.save(sd, tmp_path / "dinov3.pth")
    model, report = _load(name, tmp_path / "dinov3.pth")
    assert not report.missing and not report.unexpected
    assert "mask_token" in report.ignored and "rope_embed.periods" in report.ignored
    x = _x(32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
        assert model.forward_features(x)["patch"].shape == (2, 4, kw["embed_dim"])  # registers not in patches


def _panderm_state(depth: int, dim: int, grid: int) -> dict[str, torch.Tensor]:
    """A PanDerm file as SiyuanYan1/PanDerm classification/models/modeling_finetune.py names it
    (VisionTransformer, Block, Attention with q_bias/v_bias, layer scale gamma_1/gamma_2), under
    the CAE checkpoint's ``encoder.`` prefix, beside pretraining-only parts."""
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, grid * grid + 1, dim),
          "patch_embed.proj.weight": r(dim, 3, 16, 16), "patch_embed.proj.bias": r(dim),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
               b + "attn.qkv.weight": r(3 * dim, dim), b + "attn.q_bias": r(dim), b + "attn.v_bias": r(dim),
               b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
               b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
               b + "mlp.fc1.weight": r(4 * dim, dim), b + "mlp.fc1.bias": r(4 * dim),
               b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim),
               b + "gamma_1": r(dim), b + "gamma_2": r(dim)}
    out = {"encoder." + k: v for k, v in sd.items()}
    out["decoder.blocks.0.norm1.weight"] = r(dim)  # CAE regressor / decoder: not the encoder
    out["teacher.cls_token"] = r(1, 1, dim)
    return out


@pytest.mark.parametrize("name,arch,dim", [("panderm_vitl16", "beit_large_patch16_224", 1024),
                                           ("panderm_vitb16", "beit_base_patch16_224", 768)])
def test_panderm_file(tmp_path, name, arch, dim):
    import timm

    kw = tiny_overrides(name)
    sd = _panderm_state(kw["depth"], dim, kw["img_size"] // 16)
    torch.save(sd, tmp_path / "panderm_checkpoint-499.pth")
    model, report = _load(name, tmp_path / "panderm_checkpoint-499.pth")
    assert not report.missing and not report.unexpected
    assert {"decoder.blocks.0.norm1.weight", "teacher.cls_token"} <= set(report.ignored)
    # the library model, loaded directly with PanDerm's encoder tensors, is the reference
    ref = timm.create_model(arch, pretrained=False, num_classes=0, use_abs_pos_emb=True, use_rel_pos_bias=False,
                            global_pool="token", init_values=0.1, **kw).eval()
    ref.load_state_dict({k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")})
    x = _x(32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
        # PanDerm's linear-probe feature is norm(x)[:, 0]: the CLS token after the final norm
        torch.testing.assert_close(model(x), ref.forward_features(x)[:, 0])


def _sam_encoder_state(ref: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm's SAM ViT written back in SAM's ``ImageEncoderViT`` names (segment_anything/modeling/
    image_encoder.py: ``mlp.lin1``/``mlp.lin2``), as LVM-Med's ``lvmmed_vit.pth`` stores them."""
    return {k.replace("mlp.fc", "mlp.lin"): v.clone() for k, v in ref.state_dict().items()}


def test_lvm_med_file(tmp_path):
    import timm

    kw = tiny_overrides("lvm_med_vit_b16")
    ref = timm.create_model("samvit_base_patch16", pretrained=False, num_classes=0, use_abs_pos=False, **kw).eval()
    _randomise(ref)
    sd = _sam_encoder_state(ref)
    assert "blocks.0.mlp.lin1.weight" in sd and "neck.0.weight" in sd and "blocks.2.attn.rel_pos_h" in sd
    torch.save(sd, tmp_path / "lvmmed_vit.pth")
    model, report = _load("lvm_med_vit_b16", tmp_path / "lvmmed_vit.pth")
    assert not report.missing and not report.unexpected and not report.ignored
    x = _x(224, 1)  # LVM-Med's classifier input on the 1024 px encoder
    with torch.no_grad():
        x_blocks = ref.blocks(ref.patch_embed(x))  # (B, h, w, C): SAM's encoder without its neck
        torch.testing.assert_close(model(x), x_blocks.mean(dim=(1, 2)))
        assert model.embed_dim == 768


def _unicl_davit_state(ref: torch.nn.Module, projection: torch.Tensor) -> dict[str, torch.Tensor]:
    """timm DaViT weights written back in MedImageInsight's UniCL names (MedImageInsight
    ImageEncoder/davit_v1.py: ConvEmbed ``convs.i.{proj,norm}``, ``blocks.i.j.{spatial,channel}_block``
    with PreNorm ``conv1.fn.dw`` / ``window_attn|channel_attn.{norm,fn}`` / ``conv2.fn.dw`` /
    ``ffn.{norm,fn.net}``, pooled norm ``norms``), under ``image_encoder.``, with ``image_projection``."""
    import re

    out = {}
    for k, v in ref.state_dict().items():
        k = k.replace("stem.conv.", "convs.0.proj.").replace("stem.norm.", "convs.0.norm.")
        k = re.sub(r"stages\.(\d+)\.downsample\.conv\.", r"convs.\1.proj.", k)
        k = re.sub(r"stages\.(\d+)\.downsample\.norm\.", r"convs.\1.norm.", k)
        k = re.sub(r"stages\.(\d+)\.blocks\.", r"blocks.\1.", k)
        attn = "window_attn" if "spatial_block" in k else "channel_attn"
        k = (k.replace("cpe1.proj", "conv1.fn.dw").replace("cpe2.proj", "conv2.fn.dw")
             .replace("norm1.", f"{attn}.norm.").replace(".attn.", f".{attn}.fn.")
             .replace("norm2.", "ffn.norm.").replace("mlp.", "ffn.fn.net.").replace("head.norm.", "norms."))
        out["image_encoder." + k] = v.clone()
    out["image_projection"] = projection
    return out


def test_medimageinsight_file(tmp_path):
    import timm

    kw = tiny_overrides("medimageinsight")
    proj_dim = kw.pop("proj_dim")
    ref = timm.create_model("davit_huge_fl", pretrained=False, num_classes=0, **kw).eval()
    _randomise(ref)
    projection = torch.randn(ref.num_features, proj_dim)
    sd = _unicl_davit_state(ref, projection)
    assert "image_encoder.blocks.2.0.channel_block.channel_attn.fn.qkv.weight" in sd
    assert "image_encoder.convs.1.proj.weight" in sd and "image_encoder.norms.weight" in sd
    sd |= {"lang_projection": torch.randn(4, 4), "logit_scale": torch.tensor(1.0)}
    save_file(sd, str(tmp_path / "medimageinsigt-v1.0.0.pt"))  # the published file is safetensors
    model, report = _load("medimageinsight", tmp_path / "medimageinsigt-v1.0.0.pt")
    assert not report.missing and not report.unexpected
    assert set(report.ignored) == {"lang_projection", "logit_scale"}
    x = _x(64)
    with torch.no_grad():
        pooled = ref.forward_head(ref.forward_features(x), pre_logits=True)  # norms(avgpool(tokens))
        torch.testing.assert_close(model(x), pooled)
        torch.testing.assert_close(model.forward_features(x)["proj"], pooled @ projection)


# --- open_clip -------------------------------------------------------------------------------
def _open_clip_ref(arch, name, quick_gelu=False):
    kw = tiny_overrides(name)
    cfg = open_clip.get_model_config(arch)
    extra = {}
    if "vision" in kw or "timm_model_name" not in cfg["vision_cfg"]:
        extra["vision_cfg"] = {**cfg["vision_cfg"], **kw.get("vision", {})}
        if "timm_model_name" not in cfg["vision_cfg"]:
            extra["vision_cfg"]["image_size"] = kw["img_size"]
    if "text" in kw:
        extra["text_cfg"] = {**cfg["text_cfg"], **kw["text"]}
    ref = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu, **extra).eval()
    if "timm_model_name" in cfg["vision_cfg"]:
        ref.visual.set_input_size(kw["img_size"])
    _randomise(ref)
    return ref, kw["img_size"]


OPEN_CLIP = [  # name, open_clip arch, QuickGELU, how the publisher stores the file
    ("clip_vit_b16", "ViT-B-16", True, "safetensors"),  # open_clip_model.safetensors on the hub
    # real-size timm ViT-B trunk (open_clip passes no depth to timm): about 30 s on 2 shared cores
    pytest.param("siglip_vit_b16", "ViT-B-16-SigLIP", False, "safetensors", marks=pytest.mark.slow),
    ("monet", "ViT-L-14", True, "openai"),  # weight_clip.pt: OpenAI CLIP state dict
    ("dermlip_vit_b16", "ViT-B-16", False, "safetensors"),
    ("make_vit_b16", "ViT-B-16", False, "train"),  # MAKE.pt: open_clip training checkpoint
]


@pytest.mark.parametrize("name,arch,quick,layout", OPEN_CLIP)
def test_open_clip_file(tmp_path, name, arch, quick, layout):
    ref, size = _open_clip_ref(arch, name, quick)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if layout == "safetensors":
        path = tmp_path / "open_clip_model.safetensors"
        save_file(sd, str(path))
    elif layout == "openai":
        path = tmp_path / "weight_clip.pt"
        torch.save(sd, path)
    else:
        path = tmp_path / "MAKE.pt"
        torch.save({"epoch": 10, "name": "make", "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    model, report = _load(name, path)
    assert not report.missing and not report.unexpected and not report.ignored
    x = _x(size)
    with torch.no_grad():
        out = model.forward_features(x)
        torch.testing.assert_close(out["proj"], ref.encode_image(x))
        assert out["cls"].shape[-1] == model.embed_dim == out["patch"].shape[-1]
        assert out["patch"].shape[1] == (size // model.patch_size) ** 2
    tower = text_tower(model)
    if not CARDS[name].text_tower:
        assert tower is None  # no tokenizer offline: say so, never fake one
        return
    names = ["melanoma", "melanocytic nevus", "basal cell carcinoma"]
    emb = tower.encode([tower.template.format(n) for n in names])
    assert emb.shape == (3, out["proj"].shape[-1]) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all() and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    tok = open_clip.get_tokenizer(arch)
    with torch.no_grad():
        torch.testing.assert_close(emb, ref.encode_text(tok([tower.template.format(n) for n in names]), normalize=True))
    assert tower.logit_scale == pytest.approx(float(ref.logit_scale.detach().exp()))
    assert "{}" in tower.template


@pytest.mark.slow  # real-size timm ViT-B trunk: about 20 s on 2 shared cores
def test_biomedclip_image_tower_from_the_full_file(tmp_path):
    """BiomedCLIP's hub file holds both towers; offline only the image tower can be built, so
    its ``visual.*`` part loads strictly and the PubMedBERT side is reported as ignored."""
    from open_clip.timm_model import TimmModel

    ref = TimmModel("vit_base_patch16_224", embed_dim=512, image_size=224, pool="", proj="linear").eval()
    ref.set_input_size(32)
    _randomise(ref)
    sd = {"visual." + k: v for k, v in ref.state_dict().items()}
    sd |= {"text.transformer.embeddings.word_embeddings.weight": torch.randn(8, 4),
           "text.proj.0.weight": torch.randn(4, 4), "logit_scale": torch.tensor(4.6)}
    torch.save(sd, tmp_path / "open_clip_pytorch_model.bin")
    model, report = _load("biomedclip", tmp_path / "open_clip_pytorch_model.bin")
    assert not report.missing and not report.unexpected
    assert {"text.proj.0.weight", "logit_scale"} <= set(report.ignored)
    x = _x(32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x)["proj"], ref(x))
    assert text_tower(model) is None


def test_openai_torchscript_archive_is_refused(tmp_path):
    """OpenAI's ViT-B-16.pt is a TorchScript archive (code): it is not read as weights."""
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "ViT-B-16.pt"))
    with pytest.raises(WeightsError, match="TorchScript"):
        dermino.load("clip_vit_b16", weights=tmp_path / "ViT-B-16.pt", **tiny_overrides("clip_vit_b16"))


# --- transformers ----------------------------------------------------------------------------
def test_medsiglip_hub_file(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    from dermino.models.baselines.transformers_models import MEDSIGLIP_TEXT, MEDSIGLIP_VISION

    kw = tiny_overrides("medsiglip_448")
    cfg = SiglipConfig(vision_config={**MEDSIGLIP_VISION, **kw["vision"]}, text_config={**MEDSIGLIP_TEXT, **kw["text"]})
    ref = SiglipModel(cfg).eval()
    _randomise(ref)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    model, report = _load("medsiglip_448", tmp_path / "model.safetensors")
    assert not report.missing and not report.unexpected and not report.ignored
    x = _x(28)
    with torch.no_grad():
        out = model.forward_features(x)
        torch.testing.assert_close(out["proj"], ref.vision_model(pixel_values=x).pooler_output)
        assert out["patch"].shape == (2, 4, 64)
    assert text_tower(model) is None


# --- DINOv2 (dermino's ViT at DINOv2 sizes) ---------------------------------------------------
@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vits14_reg4",
                                  "dinov2_vitb14_reg4", "dinov2_vitl14_reg4"])
def test_dinov2_hub_file(tmp_path, name):
    from dermino.models.weights import to_dinov2_state_dict

    torch.manual_seed(0)
    src = lookup(name)(**tiny_overrides(name)).eval()
    _randomise(src)
    torch.save(to_dinov2_state_dict(src), tmp_path / f"{name}_pretrain.pth")
    model = dermino.load(name, weights=tmp_path / f"{name}_pretrain.pth", **tiny_overrides(name)).backbone
    x = _x(28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))


# --- the registry, the cards and the published hashes ------------------------------------------
LAYOUT_TESTED = (
    {"resnext101_32x8d", "resnet50", "resnext50_32x4d", "vit_base_patch16_224", "dinov3_vits16", "dinov3_vitb16",
     "lvm_med_vit_b16", "medimageinsight",
     "dinov3_vitl16", "panderm_vitl16", "panderm_vitb16", "biomedclip", "medsiglip_448"}
    | {(p.values[0] if hasattr(p, "values") else p[0]) for p in OPEN_CLIP}
    | {f"dinov2_vit{s}14{r}" for s in "sbl" for r in ("", "_reg4")}
)


def test_every_registered_backbone_has_a_layout_test():
    """Nothing enters the registry without a published-layout test here (dermino's own ViTs
    are covered by tests/test_weights.py, which writes their checkpoint formats)."""
    own = {n for n in list_backbones() if lookup(n).__module__ == "dermino.models.backbone"}
    assert set(list_backbones()) - own == LAYOUT_TESTED
    ready = {n for n, c in CARDS.items() if c.status == "ready"}
    assert ready <= LAYOUT_TESTED and ready == LAYOUT_TESTED - {"resnet50", "resnext50_32x4d"}
    for name in ready:  # every named comparator says how to get and prepare it
        card, model_cls = CARDS[name], lookup(name)
        assert card.download and card.licence and card.library and model_cls is not None


def test_unreleased_slot_is_listed_but_refused():
    card = CARDS["dermfm_zero"]
    assert card.status == "unreleased" and "dermfm_zero" not in list_backbones()
    with pytest.raises(WeightsError, match="not loadable yet"):
        dermino.models.create("dermfm_zero")


def test_published_sha256_mismatch_warns(tmp_path, monkeypatch):
    path = tmp_path / "resnext101_32x8d-8ba56ff5.pth"
    path.write_bytes(b"not the published file")
    with pytest.warns(UserWarning, match="differs"):
        assert check_published_sha256("resnext101_32x8d", path) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_published_sha256("clip_vit_b16", path) is None  # the publisher states none
    # a file whose digest starts with the stated prefix (or equals the full digest) passes silently
    import dataclasses
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for stated in (digest[:8], digest):
        monkeypatch.setitem(CARDS, "resnext101_32x8d", dataclasses.replace(CARDS["resnext101_32x8d"], sha256=stated))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert check_published_sha256("resnext101_32x8d", path) is True
