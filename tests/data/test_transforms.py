"""Multi-crop and eval transforms on a real bundled image."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dermino.data.images import read_rgb
from dermino.data.transforms import CropsConfig, MultiCropTransform, eval_transform

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "dermino" / "sample_data" / "ham10000" / "images"


@pytest.fixture(scope="module")
def image():
    path = sorted(SAMPLE.glob("*.jpg"))[0]
    return read_rgb(path)


def test_multicrop_shapes_and_normalisation(image):
    torch.manual_seed(0)  # the crop and photometry are random: a fixed draw, whatever ran before
    cfg = CropsConfig(global_size=56, local_size=28, n_local=3)
    out = MultiCropTransform(cfg)(image)
    assert [tuple(t.shape) for t in out["global"]] == [(3, 56, 56)] * 2
    assert [tuple(t.shape) for t in out["local"]] == [(3, 28, 28)] * 3
    g = out["global"][0]
    assert g.dtype == torch.float32
    # normalised: values leave [0, 1] (a raw image in [0, 1] would not go negative)
    assert g.min() < 0


def test_multicrop_is_reproducible_under_seed_and_varies_without(image):
    tf = MultiCropTransform(CropsConfig(global_size=42, local_size=28, n_local=2))
    torch.manual_seed(3)
    a = tf(image)
    torch.manual_seed(3)
    b = tf(image)
    c = tf(image)
    assert torch.equal(a["global"][0], b["global"][0]) and torch.equal(a["local"][1], b["local"][1])
    assert not torch.equal(a["global"][0], c["global"][0])
    # the two global views differ (different crops and photometry)
    assert not torch.equal(a["global"][0], a["global"][1])


@pytest.mark.parametrize("field,value", [("global_size", 50), ("local_size", 30), ("global_scale", (0.5, 0.2))])
def test_bad_crop_config_is_rejected(field, value):
    cfg = CropsConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        MultiCropTransform(cfg)


def test_eval_transform_center_crop(image):
    x = eval_transform(56)(image)
    assert tuple(x.shape) == (3, 56, 56)
    assert torch.equal(x, eval_transform(56)(image))  # deterministic
