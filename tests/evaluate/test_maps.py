"""Embedding maps: t-SNE keeps separated groups apart, PNGs + maps.json are written, the report
section renders from those files, and `dermino maps` runs end to end on real images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dermino.cli import main
from dermino.data.sample import sample_manifests
from dermino.evaluate.maps import project_2d, write_maps
from dermino.report.html import render_html
from dermino.report.maps_section import maps_section


def _three_clusters() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 32)) * 5
    x = np.concatenate([c + rng.standard_normal((20, 32)) * 0.3 for c in centres])
    return x, np.repeat(np.arange(3), 20)


def _neighbours_share_cluster(xy: np.ndarray, y: np.ndarray) -> bool:
    """Every point's nearest neighbour on the map belongs to its own cluster."""
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.eye(len(xy)) * 1e9
    return bool((y[d.argmin(1)] == y).all())


def test_tsne_keeps_clusters_apart():
    x, y = _three_clusters()
    xy = project_2d(x, "tsne")
    assert xy.shape == (60, 2) and _neighbours_share_cluster(xy, y)
    with pytest.raises(ValueError, match="method must be"):
        project_2d(x, "pca")


@pytest.mark.slow  # numba compiles UMAP on first use (about 15 s on 2 cores)
def test_umap_keeps_clusters_apart():
    pytest.importorskip("umap", reason="umap-learn is optional (pip install 'dermino[maps]')")
    x, y = _three_clusters()
    xy = project_2d(x, "umap")
    assert xy.shape == (60, 2) and np.isfinite(xy).all() and _neighbours_share_cluster(xy, y)


def test_umap_is_optional(monkeypatch):
    # without umap-learn the error says what to install
    import dermino.evaluate.maps as maps

    monkeypatch.setattr(maps, "umap_available", lambda: False)
    with pytest.raises(ValueError, match="umap-learn"):
        project_2d(np.zeros((5, 3)) + np.arange(3), "umap")


def test_write_maps_and_section(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"image": [f"i{k}.jpg" for k in range(40)], "labels": ["melanoma", "nevus"] * 20,
                       "source": ["ham10000"] * 30 + ["ph2"] * 10})
    meta = write_maps(rng.standard_normal((40, 16)), df, tmp_path, prototypes=rng.standard_normal((6, 16)),
                      prototype_names=[f"disease {k}" for k in range(6)])
    maps = json.loads(meta.read_text())["maps"]
    assert len(maps) == 3 and all((tmp_path / m["png"]).stat().st_size > 5000 for m in maps)
    assert len(pd.read_csv(tmp_path / "image_map_tsne.csv")) == 40
    section = maps_section(tmp_path)
    assert len(section.figures) == 3 and "data:image/png;base64" in render_html("r", [section])
    (tmp_path / maps[0]["png"]).unlink()
    assert any("missing map" in p for p in maps_section(tmp_path).paragraphs)


def test_maps_cli_on_real_images(tmp_path):
    torch.manual_seed(0)
    mans = sample_manifests(tmp_path / "m")
    assert main(["maps", "--backbone", "dermino_vit_small_14", "--manifest", str(mans["ph2"]), str(mans["isic2017"]),
                 "--split", "train", "--out", str(tmp_path / "maps"), "--set", "image_size=28",
                 f"cache_dir={tmp_path / 'c'}", "--model-arg", "depth=2", "embed_dim=64", "num_heads=2",
                 "img_size=28"]) == 0
    meta = json.loads((tmp_path / "maps" / "maps.json").read_text())
    assert meta["n_images"] > 20 and len(meta["maps"]) == 2
    coords = pd.read_csv(tmp_path / "maps" / "image_map_tsne.csv")
    assert set(coords.source) == {"ph2", "isic2017"}
