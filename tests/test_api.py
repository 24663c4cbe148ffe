"""dermino.load: same features as `dermino embed`, every input kind, exports and baselines; README doctest."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dermino
from dermino.cli import main
from dermino.data.manifest import read_manifest
from dermino.data.sample import sample_manifests
from dermino.features import EmbedConfig, eval_transform
from dermino.models import create, export_backbone, list_backbones

try:  # the registry may live in its own module (issue 12); the public names stay in dermino.models
    from dermino.models import tiny_overrides
except ImportError:
    from dermino.models.backbone import tiny_overrides

TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def ph2(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    man = sample_manifests(tmp)["ph2"]
    df = read_manifest(man).head(6)
    df.to_csv(tmp / "ph2_6.csv", index=False)
    return tmp, tmp / "ph2_6.csv", [str(Path(df.attrs["root"]) / v) for v in df.image]


def test_api_matches_cli_embed(ph2, tmp_path):
    tmp, man, paths = ph2
    torch.manual_seed(0)
    model = create("dermino_vit_small_14", **TINY)
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    args = ["embed", "--backbone", "dermino_vit_small_14", "--weights", str(weights), "--manifest", str(man),
            "--model-arg", *[f"{k}={v}" for k, v in TINY.items()],
            "--set", "image_size=56", f"cache_dir={tmp_path / 'cache'}"]
    assert main([*args, "--out", str(tmp_path / "cls.npy")]) == 0
    assert main([*args, "--out", str(tmp_path / "patch.npy"), "--patch"]) == 0
    m = dermino.load("dermino_vit_small_14", weights=weights, image_size=56, **TINY)
    np.testing.assert_allclose(m.embed(paths), np.load(tmp_path / "cls.npy"), atol=1e-5)
    patch = np.load(tmp_path / "patch.npy")
    assert patch.shape == (6, 16, 64)
    np.testing.assert_allclose(m.embed(paths, pool="patch"), patch, atol=1e-5)
    # the same model via a weights file with its architecture, PIL images and tensors
    f = dermino.load(weights, backbone="dermino_vit_small_14", image_size=56, **TINY)
    pil = [Image.open(p) for p in paths]
    np.testing.assert_allclose(f.embed(pil), m.embed(paths), atol=1e-5)
    batch = torch.stack([m.transform(im.convert("RGB")) for im in pil])
    np.testing.assert_allclose(m.embed(batch, pool="mean"), patch.mean(1), atol=1e-5)
    assert m.embed(paths[0], pool="cls+mean").shape == (1, 128)
    assert m.config["embed_dim"] == 64 and m.config["patch_size"] == 14
    with pytest.raises(ValueError, match="backbone="):
        dermino.load(weights)
    with pytest.raises(ValueError, match="pool must be"):
        m.embed(paths, pool="max")


def test_api_export_and_every_baseline(ph2, tmp_path):
    _, _, paths = ph2
    torch.manual_seed(0)
    model = create("dermino_vit_small_14", **TINY).eval()
    export_backbone(model, tmp_path / "export")
    loaded = dermino.load(tmp_path / "export", image_size=28)
    x = loaded.transform(Image.open(paths[0]).convert("RGB"))[None]
    with torch.inference_mode():
        ref = model(x).numpy()
    np.testing.assert_allclose(loaded.embed(paths[0]), ref, atol=1e-5)


@pytest.mark.slow  # builds every registered backbone (about 40 s on 2 cores); tests/test_backbone.py has the fast smoke
def test_api_loads_every_baseline(ph2):
    _, _, paths = ph2
    for name in list_backbones():
        m = dermino.load(name, **tiny_overrides(name))
        ps = m.backbone.patch_size
        size = 2 * ps if ps else 56  # the tiny models' own 2 x 2 patch grid
        m.transform = eval_transform(m.backbone, EmbedConfig(image_size=size, preprocess="config"))
        feats = m.embed(paths[:2], pool="cls")
        assert feats.shape == (2, m.config["embed_dim"]) and np.isfinite(feats).all(), name
        if m.config["preprocessing"] and m.config["preprocessing"]["pool"] == "proj":  # pool 'auto' = the joint embedding
            assert m.embed(paths[:1]).shape[1] == m.backbone.forward_features(m._batch(paths[:1]))["proj"].shape[1]


def readme_example() -> str:
    text = README.read_text()
    block = re.search(r"```python\n(>>> .*?)```", text, re.S)
    assert block, "README has no ```python block with a doctest"
    return block.group(1)


def test_readme_doctest():
    example = readme_example()
    assert len([ln for ln in example.splitlines() if ln.startswith(">>> ")]) <= 5
    test = doctest.DocTestParser().get_doctest(example, {}, "README", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 3
