"""Dice / Jaccard against hand-computed cases, including both empty-mask conventions."""

import math

import numpy as np
import pytest

from dermino.evaluate import segmentation as M

TARGET = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
PRED = np.array([[1, 0, 1], [0, 0, 0]], dtype=bool)
EMPTY = np.zeros((2, 3), dtype=bool)


def test_counts_and_lesion_scores():
    c = M.counts(PRED, TARGET)
    assert c.tolist() == [1, 1, 1, 3]  # tp, fp, fn, tn
    assert M.per_image(c, "dice")[0] == pytest.approx(2 / 4)
    assert M.per_image(c, "jaccard")[0] == pytest.approx(1 / 3)


def test_background_and_mean_over_classes_are_separate():
    c = M.counts(PRED, TARGET)
    # background: tp = 3 (lesion tn), fp = 1 (lesion fn), fn = 1 (lesion fp)
    assert M.per_image(c, "dice", "background")[0] == pytest.approx(6 / 8)
    assert M.per_image(c, "jaccard", "background")[0] == pytest.approx(3 / 5)
    assert M.per_image(c, "dice", "mean")[0] == pytest.approx((0.5 + 0.75) / 2)


def test_empty_mask_conventions():
    both_empty = M.counts(EMPTY, EMPTY)
    c = np.stack([M.counts(PRED, TARGET), both_empty])
    assert M.per_image(both_empty, "dice", empty="one")[0] == 1.0
    assert math.isnan(M.per_image(both_empty, "dice", empty="skip")[0])
    assert M.mean_per_image(c, "dice", empty="one") == pytest.approx((0.5 + 1.0) / 2)
    assert M.mean_per_image(c, "dice", empty="skip") == pytest.approx(0.5)
    assert M.mean_per_image(c, "jaccard", empty="skip") == pytest.approx(1 / 3)
    assert math.isnan(M.mean_per_image(both_empty, "dice", empty="skip"))
    # a false alarm on an empty truth, or a miss, scores 0 under either convention
    for empty in M.EMPTY_CONVENTIONS:
        assert M.per_image(M.counts(TARGET, EMPTY), "dice", empty=empty)[0] == 0.0
        assert M.per_image(M.counts(EMPTY, TARGET), "jaccard", empty=empty)[0] == 0.0
    with pytest.raises(ValueError, match="empty"):
        M.per_image(both_empty, empty="zero")


def test_pooled_differs_from_per_image():
    big_t = np.zeros((10, 10), bool)
    big_t[:5] = True  # 50 lesion pixels, all found
    small_t = np.zeros((10, 10), bool)
    small_t[0, 0] = True  # 1 lesion pixel, missed; 1 false positive elsewhere
    small_p = np.zeros((10, 10), bool)
    small_p[9, 9] = True
    c = np.stack([M.counts(big_t, big_t), M.counts(small_p, small_t)])
    assert M.mean_per_image(c, "dice") == pytest.approx(0.5)
    assert M.pooled(c, "dice") == pytest.approx(100 / 102)
    assert M.pooled(c, "jaccard") == pytest.approx(50 / 52)


def test_whole_image_baseline():
    c = M.counts(PRED, TARGET)  # 2 lesion pixels of 6
    assert M.whole_image_baseline(c, "dice") == pytest.approx(4 / 8)
    assert M.whole_image_baseline(c, "jaccard") == pytest.approx(2 / 6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        M.counts(PRED, TARGET[:, :2])


def test_summarize_names_and_bootstrap_interval():
    rng = np.random.default_rng(0)
    c = []
    for _ in range(30):
        t = rng.random((8, 8)) < 0.4
        p = t ^ (rng.random((8, 8)) < 0.15)
        c.append(M.counts(p, t))
    c = np.stack(c)
    out = M.summarize(c, n_bootstrap=200, seed=0)
    assert {"dice", "jaccard", "dice_pooled", "dice_background", "dice_mean_classes"} <= set(out)
    d = out["dice"]
    assert d.value == pytest.approx(M.mean_per_image(c, "dice"))
    assert d.ci_low < d.value < d.ci_high and d.n == 30
    assert out["jaccard"].value < d.value  # Jaccard <= Dice always
    again = M.summarize(c, n_bootstrap=200, seed=0)["dice"]
    assert (again.ci_low, again.ci_high) == (d.ci_low, d.ci_high)
