"""Retrieval: R@k and mAP by diagnosis against brute force and scikit-learn; image-to-text R@k."""

from __future__ import annotations

import numpy as np
import pytest

from dermino.evaluate.retrieval import image_to_image, image_to_text, per_query_retrieval


def test_hand_worked_retrieval():
    # 1-D directions on the circle: query at angle 0 (label a); bank at angles 10, 20, 30, 40 deg
    ang = np.deg2rad([10, 20, 30, 40])
    bank = np.stack([np.cos(ang), np.sin(ang)], 1)
    bank_y = np.array(["b", "a", "b", "a"])
    q = np.array([[1.0, 0.0]])
    per = per_query_retrieval(q, np.array(["a"]), bank, bank_y, ks=(1, 2, 3))
    assert per["r@1"][0] == 0 and per["r@2"][0] == 1 and per["r@3"][0] == 1
    # relevant at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5
    assert per["map"][0] == pytest.approx(0.5)


def test_against_bruteforce_and_sklearn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    bank, q = rng.normal(size=(80, 6)), rng.normal(size=(25, 6))
    bank_y, q_y = rng.integers(0, 3, 80), rng.integers(0, 3, 25)
    per = per_query_retrieval(q, q_y, bank, bank_y, ks=(1, 5, 10), chunk=7)
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    for i in range(25):
        sims = bn @ (q[i] / np.linalg.norm(q[i]))
        order = np.argsort(-sims)
        for k in (1, 5, 10):
            assert per[f"r@{k}"][i] == float((bank_y[order[:k]] == q_y[i]).any())
        assert per["map"][i] == pytest.approx(average_precision_score(bank_y == q_y[i], sims))
    res = image_to_image(q, q_y, bank, bank_y, n_resamples=100)
    assert res["map"].value == pytest.approx(per["map"].mean())
    assert res["r@5"].ci_low <= res["r@5"].value <= res["r@5"].ci_high


def test_image_to_text_recall():
    img = np.eye(4)
    text = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])
    caps = ["a", "b", "c", "d"]
    res = image_to_text(img, text, caps, ks=(1, 2), n_resamples=20)
    # image 0 -> text 0 (hit); image 1 -> text 2 (miss at 1); image 2 -> text 1 (miss); image 3 -> 3 (hit)
    assert res["i2t_r@1"].value == pytest.approx(0.5)
    same = image_to_text(img, text, ["a", "b", "b", "d"], ks=(1,), n_resamples=20)  # identical captions count
    assert same["i2t_r@1"].value == pytest.approx(1.0)
