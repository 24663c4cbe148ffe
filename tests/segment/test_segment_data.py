"""Masks: binary check naming the file, nearest resize, skipped rows, joint augmentation."""

import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermino.data.manifest import conform
from dermino.segment.config import AugmentConfig
from dermino.segment.data import (
    MaskError,
    Pair,
    SegmentationDataset,
    augment_pair,
    check_masks,
    mask_pairs,
    read_binary_mask,
)


def _png(path, arr):
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


def test_binary_masks_0_255_and_0_1(tmp_path):
    a = np.zeros((4, 6), np.uint8)
    a[1:3, 2:5] = 255
    m = read_binary_mask(_png(tmp_path / "a.png", a))
    assert m.dtype == bool and m.sum() == 6
    assert (read_binary_mask(_png(tmp_path / "b.png", a // 255)) == m).all()
    assert not read_binary_mask(_png(tmp_path / "e.png", np.zeros((4, 6)))).any()  # all background
    assert read_binary_mask(_png(tmp_path / "f.png", np.full((4, 6), 255))).all()  # all lesion


def test_non_binary_mask_is_an_error_naming_the_file(tmp_path):
    a = np.zeros((4, 6), np.uint8)
    a[0, 0], a[1, 1] = 128, 255
    path = _png(tmp_path / "ISIC_soft_segmentation.png", a)
    with pytest.raises(MaskError, match="ISIC_soft_segmentation.png.*not binary"):
        read_binary_mask(path)
    others = [Pair(tmp_path / "i.png", _png(tmp_path / "ok.png", a // 255 * 255), 0), Pair(tmp_path / "i.png", path, 7)]
    with pytest.raises(MaskError, match=r"1 of 2 masks are unusable:\n.*ISIC_soft_segmentation.png.*row 7"):
        check_masks(others, progress=False)
    # opted in: anti-aliased edges are thresholded at half the top level
    assert read_binary_mask(path, threshold=0.5).sum() == 2
    assert read_binary_mask(path, threshold=0.9).sum() == 1


def test_different_size_mask_resized_nearest_stays_binary(tmp_path):
    a = np.zeros((10, 10), np.uint8)
    a[:, 5:] = 255  # right half lesion
    m = read_binary_mask(_png(tmp_path / "m.png", a), size=(30, 20))  # (width, height) of the image
    assert m.shape == (20, 30)
    assert m[:, 15:].all() and not m[:, :15].any()


def test_rows_without_mask_skipped_and_counted(tmp_path, caplog):
    _png(tmp_path / "m.png", np.zeros((4, 4)))
    df = conform(pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg"], "mask": ["m.png", "", ""],
                               "split": ["train", "train", "test"]}))
    df.attrs["root"] = str(tmp_path)
    with caplog.at_level(logging.INFO):
        pairs = mask_pairs(df, "train")
    assert [p.row for p in pairs] == [0] and pairs[0].mask == tmp_path / "m.png"
    assert "1 of 2 rows in split 'train' have no mask" in caplog.text
    with pytest.raises(ValueError, match="none of the 1 rows in split 'test' has a mask"):
        mask_pairs(df, "test")
    assert mask_pairs(df, "val") == []  # no rows at all: nothing to skip


def test_augmentation_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    mask = np.zeros((60, 80), bool)
    mask[10:35, 20:70] = True
    image = Image.fromarray(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2))
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rot90=True, scale=[0.3, 1.0])
    plain = np.asarray(Image.fromarray(mask).resize((32, 32), Image.Resampling.NEAREST))
    changed = 0
    for _ in range(20):
        img, m = augment_pair(image, mask, (32, 32), cfg, rng)
        assert m.shape == (32, 32) and m.dtype == bool
        bright = np.asarray(img)[..., 0] > 127
        assert (bright == m).mean() > 0.97  # only bilinear edge pixels may differ
        changed += not np.array_equal(m, plain)
    assert changed > 10  # the geometry really varies


def test_dataset_augmentation_is_seeded(tmp_path):
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 10:30] = 255
    _png(tmp_path / "m.png", mask)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    pairs = [Pair(tmp_path / "i.png", tmp_path / "m.png", 0)]
    ds = [SegmentationDataset(pairs, (28, 28), (0.5,) * 3, (0.5,) * 3, AugmentConfig(), seed=3) for _ in range(2)]
    a, b = ds[0][0], ds[1][0]
    assert a[0].shape == (3, 28, 28) and a[1].shape == (28, 28) and set(a[1].unique().tolist()) <= {0, 1}
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    ds[1].set_epoch(1)
    assert not np.array_equal(ds[0][0][0], ds[1][0][0])
