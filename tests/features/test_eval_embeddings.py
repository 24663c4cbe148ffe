"""Embedding cache: reused without a forward pass, invalidated by weights/manifest/transform, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermino.data.manifest import conform
from dermino.features import EmbedConfig, extract_embeddings, pool_features
from dermino.models import create


def ham_manifest(shared_data: Path, n: int) -> pd.DataFrame:
    meta = pd.read_csv(shared_data / "ham10000" / "HAM10000_metadata.csv").sort_values("image_id").head(n)
    df = conform(pd.DataFrame({
        "image": [f"images/{i}.jpg" for i in meta.image_id],
        "labels": meta.dx.tolist(), "lesion_id": meta.lesion_id.tolist(), "source": "ham10000",
    }))
    df.attrs["root"] = str(shared_data / "ham10000")
    return df


class Counting(torch.nn.Module):
    """Wraps a backbone and counts forward passes."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.patch_size, self.mean, self.std = inner.patch_size, inner.mean, inner.std

    def forward_features(self, x):
        self.calls += 1
        return self.inner.forward_features(x)


def tiny(seed=0):
    torch.manual_seed(seed)
    return create("dermino_vit_tiny_14", depth=2, embed_dim=64, num_heads=2, img_size=28)


@pytest.fixture
def setup(shared_data, tmp_path):
    df = ham_manifest(shared_data, 10)
    cfg = EmbedConfig(image_size=28, batch_size=3, chunk_size=4, cache_dir=str(tmp_path / "cache"))
    return df, cfg


def test_cache_reused_then_invalidated(setup, tmp_path):
    df, cfg = setup
    m = Counting(tiny())
    e1 = extract_embeddings(m, df, cfg, progress=False)
    assert e1.features.shape == (10, 64) and e1.computed_rows == 10
    assert m.calls == 5  # batches never straddle chunks of 4: [3,1], [3,1], [2]
    m.calls = 0
    e2 = extract_embeddings(m, df, cfg, progress=False)
    assert m.calls == 0 and e2.computed_rows == 0 and e2.key == e1.key
    np.testing.assert_array_equal(e1.features, e2.features)
    assert (e1.path / "meta.json").is_file()
    assert "transform" in e2.meta and e2.meta["transform"]["image_size"] == 28

    # different weights -> new key
    other = Counting(tiny(seed=1))
    e3 = extract_embeddings(other, df, cfg, progress=False)
    assert e3.key != e1.key and other.calls > 0
    # different rows -> new key
    e4 = extract_embeddings(m, df.iloc[:6].copy(), cfg, progress=False)
    assert e4.key != e1.key and m.calls > 0
    # different transform / pool -> new key
    for change in ({"image_size": 42}, {"pool": "cls+mean"}, {"resize": 32}):
        e = extract_embeddings(m, df, EmbedConfig(**{**cfg.__dict__, **change}), progress=False)
        assert e.key != e1.key
        if change.get("pool") == "cls+mean":
            assert e.features.shape == (10, 128)
            np.testing.assert_allclose(e.features[:, :64], e1.features, rtol=1e-5, atol=1e-6)
    # weights file content keys the cache
    w = tmp_path / "w.bin"
    w.write_bytes(b"abc")
    k1 = extract_embeddings(m, df, cfg, weights=w, progress=False).key
    w.write_bytes(b"abd")
    assert extract_embeddings(m, df, cfg, weights=w, progress=False).key != k1


def test_features_match_direct_forward(setup):
    df, cfg = setup
    model = tiny()
    e = extract_embeddings(model, df.iloc[:3].copy(), cfg, progress=False)
    from dermino.data.images import read_rgb
    from dermino.data.manifest import resolve
    from dermino.features import eval_transform

    t = eval_transform(model, cfg)
    x = torch.stack([t(read_rgb(resolve(df, c))) for c in df.image[:3]])
    with torch.inference_mode():
        ref = model.eval()(x).numpy()
    np.testing.assert_allclose(e.features, ref, rtol=1e-4, atol=1e-5)
    assert x.shape == (3, 3, 28, 28)


def test_resume_after_crash(setup):
    df, cfg = setup

    class Crashing(Counting):
        def forward_features(self, x):
            if self.calls == 3:  # dies inside the 2nd chunk (batches 3+1, 3+1, 2)
                raise RuntimeError("boom")
            return super().forward_features(x)

    m = Crashing(tiny())
    with pytest.raises(RuntimeError, match="boom"):
        extract_embeddings(m, df, cfg, progress=False)
    done = sorted(p.name for p in Path(cfg.cache_dir).glob("*/chunk_*.npy"))
    assert done == ["chunk_00000.npy"]
    m2 = Counting(tiny())
    e = extract_embeddings(m2, df, cfg, progress=False)
    assert e.computed_rows == 6 and m2.calls == 3
    full = extract_embeddings(tiny(), df, EmbedConfig(**{**cfg.__dict__, "cache_dir": cfg.cache_dir + "2"}),
                              progress=False)
    np.testing.assert_allclose(e.features, full.features, rtol=1e-5, atol=1e-6)


def test_errors_name_the_problem(setup, tmp_path):
    df, cfg = setup
    with pytest.raises(ValueError, match="multiple of the patch"):
        extract_embeddings(tiny(), df, EmbedConfig(image_size=30, cache_dir=str(tmp_path)), progress=False)
    bad = df.copy()
    bad.loc[2, "image"] = "images/nope.jpg"
    with pytest.raises(FileNotFoundError, match="row 2"):
        extract_embeddings(tiny(), bad, cfg, progress=False)
    with pytest.raises(ValueError, match="patch tokens"):
        pool_features(torch.zeros(2, 4), "mean")


def test_model_hash_covers_zero_dim_buffers():
    """BatchNorm's num_batches_tracked is a 0-d integer tensor: hashing it must work and count."""
    from dermino.features import model_hash

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    first = model_hash(net)
    net[1].num_batches_tracked += 1
    assert model_hash(net) != first
