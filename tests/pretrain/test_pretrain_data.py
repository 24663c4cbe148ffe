"""Pretraining dataset, sampler and collate on real bundled images."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermino.data.datasets import (
    MultiCropCollate,
    PretrainDataset,
    ResumableSampler,
    encode_label_targets,
    label_classes,
    source_row_weights,
)
from dermino.data.images import ImageReadError
from dermino.data.masking import MaskingConfig
from dermino.data.transforms import CropsConfig, MultiCropTransform

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "dermino" / "sample_data"


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    images = sorted((SAMPLE / "ham10000" / "images").glob("*.jpg"))[:6]
    isic = sorted((SAMPLE / "isic2017").rglob("*.jpg"))[:2]
    rows = [{"image": str(p), "source": "ham10000", "labels": "melanoma" if i % 2 else "nevus",
             "label_space": "melanoma;nevus"} for i, p in enumerate(images)]
    rows += [{"image": str(p), "source": "isic2017", "labels": "", "label_space": ""} for p in isic]
    return pd.DataFrame(rows)


def tf() -> MultiCropTransform:
    return MultiCropTransform(CropsConfig(global_size=42, local_size=28, n_local=2))


def test_targets_follow_label_space(manifest):
    classes = label_classes(manifest)
    assert classes == ["melanoma", "nevus"]
    targets, mask = encode_label_targets(manifest, classes)
    assert targets[1].tolist() == [1.0, 0.0] and mask[1].tolist() == [1.0, 1.0]
    assert mask[-1].sum() == 0  # unlabelled isic row: no supervision


def test_item_and_collate_shapes_and_reproducibility(manifest):
    targets, mask = encode_label_targets(manifest, ["melanoma", "nevus"])
    ds = PretrainDataset(manifest, tf(), targets, mask)
    a, b = ds[(3, 123)], ds[(3, 123)]
    assert torch.equal(a["global"][0], b["global"][0]) and torch.equal(a["local"][1], b["local"][1])
    assert not torch.equal(a["global"][0], ds[(3, 124)]["global"][0])
    collate = MultiCropCollate(14, MaskingConfig(), seed=0)
    items = [ds[(i, 10 + i)] for i in range(4)]
    batch = collate(items)
    assert batch["global_crops"].shape == (8, 3, 42, 42)
    assert batch["local_crops"].shape == (8, 3, 28, 28)
    assert batch["masks"].shape == (8, 9) and batch["masks"].dtype == torch.bool
    assert batch["targets"].shape == (4, 2)
    # view-major layout: rows 0..3 are view 0 of images 0..3, rows 4..7 their view 1
    assert torch.equal(batch["global_crops"][5], items[1]["global"][1])
    assert torch.equal(batch["local_crops"][4], items[0]["local"][1])
    assert torch.equal(collate(items)["masks"], batch["masks"])  # masks reproducible from seeds


def test_bad_image_skip_logs_and_replaces(manifest, tmp_path, caplog):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    df = pd.concat([manifest, pd.DataFrame([{"image": str(bad), "source": "ham10000", "labels": "",
                                             "label_space": ""}])], ignore_index=True)
    bad_row = len(df) - 1
    with caplog.at_level(logging.WARNING):
        item = PretrainDataset(df, tf(), on_bad_image="skip")[(bad_row, 5)]
    assert item["row"] != bad_row
    assert "broken.jpg" in caplog.text
    with pytest.raises(ImageReadError, match="broken.jpg"):
        PretrainDataset(df, tf(), on_bad_image="raise")[(bad_row, 5)]


def test_sampler_resume_and_ranks():
    full = list(ResumableSampler(10, seed=1))
    assert sorted(r for r, _ in full) == list(range(10))  # a permutation: each row once
    s = ResumableSampler(10, seed=1)
    s.set_state(0, 4)
    assert list(s) == full[4:]  # resuming mid-epoch continues the same order
    s.set_state(1, 0)
    assert [r for r, _ in s] != [r for r, _ in full]  # new epoch, new order
    r0 = list(ResumableSampler(10, seed=1, rank=0, world_size=2))
    r1 = list(ResumableSampler(10, seed=1, rank=1, world_size=2))
    assert sorted(r0 + r1) == sorted(full) and not set(r0) & set(r1)


def test_source_weights_balance_sources(manifest):
    w = source_row_weights(manifest, {"ham10000": 1.0, "isic2017": 1.0})
    assert w.sum() == pytest.approx(1.0)
    s = ResumableSampler(len(manifest), weights=w, seed=0, epoch_size=4000)
    counts = Counter(manifest["source"].iloc[[r for r, _ in s]])
    # 2 isic rows vs 6 ham rows, equal source weights: about half the draws each
    assert abs(counts["isic2017"] / 4000 - 0.5) < 0.05
    assert source_row_weights(manifest, {}) is None
    with pytest.raises(ValueError, match="nope"):
        source_row_weights(manifest, {"nope": 1.0})
    assert np.all(w > 0)
