"""Each comparator's preprocessing record gives the pixels its publisher's own transform gives.

On a real HAM10000 image (600 x 450, not square, so the resize rule and the crop matter) the
tensor from dermino's ``eval_transform`` equals the upstream transform's: torchvision weights'
``transforms()``, timm's ``resolve_data_config`` + ``create_transform``, open_clip's
``image_transform`` with the pretrained tag's config, transformers' ``SiglipImageProcessor``, or
the publisher's own torchvision pipeline written out here from its repository.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dermino.features import EmbedConfig, eval_transform, resolve_pool
from dermino.models.baselines import CARDS
from dermino.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

open_clip = pytest.importorskip("open_clip")

IMAGE = Path(__file__).resolve().parents[2] / "src/dermino/sample_data/ham10000/images/ISIC_0031643.jpg"


@pytest.fixture(scope="module")
def image() -> Image.Image:
    img = Image.open(IMAGE).convert("RGB")
    assert img.size[0] != img.size[1]
    return img


def _timm(arch: str):
    import timm
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(arch).to_dict())
    return create_transform(**cfg)


def _open_clip(arch: str, tag: str | None):
    pcfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    return open_clip.image_transform(
        224, is_train=False, mean=pcfg.get("mean"), std=pcfg.get("std"),
        resize_mode=pcfg.get("resize_mode"), interpolation=pcfg.get("interpolation"),
    )


def _torchvision_v1():
    from torchvision.models import ResNeXt101_32X8D_Weights

    return ResNeXt101_32X8D_Weights.IMAGENET1K_V1.transforms()


def _panderm():
    # SiyuanYan1/PanDerm classification/models/builder.py get_eval_transforms('imagenet')
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.228, 0.224, 0.225))])


def _monet():
    # suinleelab/MONET README get_transform(n_px=224)
    return T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _dinov2():
    # facebookresearch/dinov2 dinov2/data/transforms.py make_classification_eval_transform()
    return T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _lvm_med():
    # duyhominhnguyen/LVM-Med classification_VIT/train_SAMVIT_classification.py
    return T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def _medimageinsight():
    # MedImageInsight config: IMAGE_SIZE 480, TEST.CENTER_CROP False, AUG.INTERPOLATION bicubic, ImageNet stats
    return T.Compose([T.Resize((480, 480), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _medsiglip():
    # the PIL backend: what the hub's preprocessor_config.json ran with when MedSigLIP was
    # published (transformers 5's default backend resizes uint8 tensors instead: up to two
    # grey levels on ~0.5 % of pixels, see test_medsiglip_tensor_backend_is_within_two_grey_levels)
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    proc = SiglipImageProcessorPil(size={"height": 448, "width": 448})
    return lambda img: torch.from_numpy(np.asarray(proc(images=img, return_tensors="np")["pixel_values"][0]))


UPSTREAM = {
    "resnext101_32x8d": _torchvision_v1,
    "vit_base_patch16_224": lambda: _timm("vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    "dinov3_vits16": lambda: _timm("vit_small_patch16_dinov3.lvd1689m"),
    "dinov3_vitb16": lambda: _timm("vit_base_patch16_dinov3.lvd1689m"),
    "dinov3_vitl16": lambda: _timm("vit_large_patch16_dinov3.lvd1689m"),
    "panderm_vitl16": _panderm,
    "panderm_vitb16": _panderm,
    "clip_vit_b16": lambda: _open_clip("ViT-B-16", "openai"),
    "siglip_vit_b16": lambda: _open_clip("ViT-B-16-SigLIP", "webli"),
    "biomedclip": lambda: _open_clip("ViT-B-16", None),  # hub preprocess_cfg = open_clip's OpenAI defaults
    "dermlip_vit_b16": lambda: _open_clip("ViT-B-16", None),
    "make_vit_b16": lambda: _open_clip("ViT-B-16", None),
    "monet": _monet,
    "lvm_med_vit_b16": _lvm_med,
    "medimageinsight": _medimageinsight,
    "medsiglip_448": _medsiglip,
    **{f"dinov2_vit{s}14{r}": _dinov2 for s in "sbl" for r in ("", "_reg4")},
}


def test_every_comparator_has_an_upstream_transform():
    assert {n for n, c in CARDS.items() if c.status == "ready"} == set(UPSTREAM)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_preprocessing_matches_upstream(image, name):
    pre = CARDS[name].preprocess
    assert isinstance(pre, Preprocess)
    ours = eval_transform(SimpleNamespace(preprocess=pre, patch_size=None), EmbedConfig())(image)
    theirs = UPSTREAM[name]()(image)
    assert ours.shape == theirs.shape == (3, pre.image_size, pre.image_size)
    # both are the same PIL resample + the same float32 arithmetic: equal to float rounding
    torch.testing.assert_close(ours, theirs.float(), atol=1e-6, rtol=0)


def test_config_can_override_and_pool_auto_resolves(image):
    pre = CARDS["clip_vit_b16"].preprocess
    model = SimpleNamespace(preprocess=pre, patch_size=16, mean=pre.mean, std=pre.std)
    forced = eval_transform(model, EmbedConfig(image_size=128, preprocess="config"))
    assert forced(image).shape == (3, 128, 128)
    assert resolve_pool(model, "auto") == "proj" and resolve_pool(model, "cls") == "cls"
    assert resolve_pool(SimpleNamespace(), "auto") == "cls"


def test_medsiglip_tensor_backend_is_within_two_grey_levels(image):
    """transformers 5's default (torchvision-tensor) SigLIP processor rounds resampled uint8
    pixels differently from PIL: at most two grey levels (one level is 2/255 after mean = std = 0.5)."""
    from transformers import SiglipImageProcessor

    pre = CARDS["medsiglip_448"].preprocess
    ours = eval_transform(SimpleNamespace(preprocess=pre, patch_size=None), EmbedConfig())(image)
    proc = SiglipImageProcessor(size={"height": 448, "width": 448})
    theirs = torch.from_numpy(np.asarray(proc(images=image, return_tensors="np")["pixel_values"][0]))
    diff = (ours - theirs).abs()
    assert diff.max() <= 2 * 2 / 255 + 1e-6 and (diff > 1e-6).float().mean() < 0.02


def test_record_reaches_cache_meta_and_load_config(tmp_path):
    """The model's record is applied by the extractor and written into the cache meta; dermino.load
    reports it too, and an explicit size with preprocess='config' overrides it."""
    import pandas as pd

    import dermino
    from dermino.data.manifest import conform
    from dermino.features import extract_embeddings
    from dermino.models import create
    from dermino.models.registry import tiny_overrides

    model = create("dinov3_vits16", **tiny_overrides("dinov3_vits16"))  # dynamic input size: 256 px works
    df = conform(pd.DataFrame({"image": [str(IMAGE)]}))
    emb = extract_embeddings(model, df, EmbedConfig(cache_dir=str(tmp_path), pool="auto"), progress=False)
    assert emb.meta["preprocessing"] == CARDS["dinov3_vits16"].preprocess.params()
    assert emb.meta["transform"]["image_size"] == 256 and emb.meta["pool"] == "cls"
    m = dermino.load("dinov3_vits16", **tiny_overrides("dinov3_vits16"))
    assert m.config["preprocessing"]["image_size"] == 256 and m.transform.image_size == 256
    forced = dermino.load("dinov3_vits16", image_size=64, **tiny_overrides("dinov3_vits16"))
    assert forced.transform.image_size == 64
    kept = dermino.load("dinov3_vits16", image_size=64, preprocess="model", **tiny_overrides("dinov3_vits16"))
    assert kept.transform.image_size == 256
