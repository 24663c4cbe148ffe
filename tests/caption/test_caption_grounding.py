"""The grounding control: swapped-image partners, the paired scores, and a captioner that follows its image."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermino.caption.grounding import _micro_f1, grounding_control, swap_partners

TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 56}
LABELS = [("melanoma",), ("nevus",), ("nevus",), ("melanoma",), ("nevus",), ("basal cell carcinoma",),
          ("nevus",), ("nevus",)]


def test_partners_have_a_different_diagnosis_and_are_deterministic():
    a = swap_partners(LABELS, seed=3)
    assert np.array_equal(a, swap_partners(LABELS, seed=3))
    for i, j in enumerate(a):
        assert not set(LABELS[i]) & set(LABELS[j]), (i, j)
    # a different seed draws other partners somewhere (still of a different diagnosis)
    b = swap_partners(LABELS, seed=4)
    assert all(not set(LABELS[i]) & set(LABELS[j]) for i, j in enumerate(b))
    assert any(not np.array_equal(swap_partners(LABELS, seed=s), a) for s in range(5, 10))
    # multi-label rows: a partner shares none of the labels; case and spaces do not matter
    multi = [("melanoma", "nevus"), ("Nevus ",), ("vascular lesion",)]
    assert all(p == 2 for p in swap_partners(multi, seed=0)[:2])


def test_no_partner_is_a_clear_error():
    with pytest.raises(ValueError, match="different diagnosis"):
        swap_partners([("nevus",), ("nevus",)])


def test_micro_f1_hand_worked():
    truth = np.array([[1, 1, 0], [0, 1, 0]], bool)
    stated = np.array([[1, 0, 1], [0, 1, 0]], bool)
    # TP = 2, FP = 1, FN = 1 -> 4 / 6
    assert _micro_f1(truth, stated) == pytest.approx(4 / 6)


def test_grounding_control_paired_difference_hand_worked():
    correct = np.array([1, 1, 1, 1, 0, 1, 1, 1] * 5, bool)
    swapped = np.array([0, 0, 1, 0, 0, 1, 0, 0] * 5, bool)
    truth = [{"streaks"}, None] * 20
    gen_true = ["streaks are present", "a nevus"] * 20
    gen_swapped = ["no streaks", "a nevus"] * 20
    g = grounding_control(correct, swapped, gen_true, gen_swapped, truth, np.arange(40), n_bootstrap=400, seed=0)
    d = g["diagnosis_accuracy"]
    assert d["true_image"] == pytest.approx(35 / 40) and d["swapped_image"] == pytest.approx(10 / 40)
    assert d["diff"] == pytest.approx(25 / 40) and d["ci_low"] > 0 and d["p_value"] < 0.01
    c = g["criteria_f1"]
    assert c["true_image"] == pytest.approx(1.0) and c["swapped_image"] == 0.0  # "no streaks": all missed
    assert g["grounded"] is True
    # identical captions from either image: no difference, not grounded
    same = grounding_control(correct, correct, gen_true, gen_true, truth, np.arange(40), n_bootstrap=200)
    assert same["diagnosis_accuracy"]["diff"] == 0 and same["grounded"] is False


def _patch_images(folder, n_per_class: int) -> pd.DataFrame:
    """Grey squares with a red or a blue patch: the patch colour decides the caption (not skin images)."""
    rows = []
    rng = np.random.default_rng(0)
    for label, colour, caption in (("melanoma", (200, 30, 30), "The lesion is a melanoma."),
                                   ("nevus", (30, 30, 200), "The lesion is a nevus.")):
        for i in range(n_per_class):
            a = np.full((56, 56, 3), 128, np.uint8)
            y, x = rng.integers(4, 24, size=2)
            a[y: y + 28, x: x + 28] = colour
            path = folder / f"{label}_{i}.png"
            Image.fromarray(a).save(path)
            rows.append({"image": path.name, "source": "patches", "labels": label, "label_space": "melanoma|nevus",
                         "split": "test" if i % 3 == 0 else "train", "caption": caption, "lesion_id": f"{label}{i}"})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_captions_follow_the_patch_and_the_swapped_control_falls(smollm2, tmp_path):
    """A short CPU run on images whose patch colour decides the caption: true-image captions are right,
    swapped-image captions (the other colour's features) are wrong, and the control says so."""
    import torch

    from dermino.caption.config import CaptionConfig
    from dermino.caption.evaluate import evaluate_run
    from dermino.caption.model import CaptionerSpec
    from dermino.caption.train import train_captioner
    from dermino.data.manifest import write_manifest
    from dermino.models import create

    lm, tok = smollm2
    images = tmp_path / "images"
    images.mkdir()
    manifest = write_manifest(_patch_images(images, 12), tmp_path / "patches.csv", root=images)
    spec = CaptionerSpec(encoder="dermino_vit_tiny_14", encoder_overrides=dict(TINY), patch_grid=2,
                         image_tokens="cls", prompt="Caption:", lora_r=4)
    cfg = CaptionConfig(manifests=[str(manifest)], model=spec, image_size=56, out=str(tmp_path / "run"),
                        max_steps=30, batch_size=8, projector_lr=3e-3, lora_lr=1e-3, max_caption_tokens=12,
                        max_new_tokens=8, bootstrap=200, meteor=False, progress=False, device="cpu")
    torch.manual_seed(0)
    train_captioner(cfg, lm=copy.deepcopy(lm), tokenizer=tok, encoder=create("dermino_vit_tiny_14", **TINY))
    result = evaluate_run(tmp_path / "run", lm=copy.deepcopy(lm), tokenizer=tok)
    g = result.extra["grounding"]["diagnosis_accuracy"]
    assert g["n"] == 8
    assert g["true_image"] >= 0.85, result.extra
    assert g["swapped_image"] <= 0.15, result.extra
    assert g["ci_low"] > 0 and result.extra["grounding"]["grounded"]
    swapped = pd.read_csv(tmp_path / "run" / "results" / result.extra["grounding"]["predictions"])
    assert (swapped["labels"] != swapped["partner_labels"]).all()
