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


def _tiny_lm(tok, captions: list[str], prompt: str, k: int, steps: int = 100):
    """A 2-layer causal LM that knows the captions' wording but not which goes with which image.

    It stands in for a pretrained LM (SmolLM2 would take minutes per test on a CPU): trained on the
    captions behind ``k`` random "image" vectors, it writes each caption about equally often, so only
    the projector and LoRA, from the image tokens, can make the caption follow the image.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    lm = LlamaForCausalLM(cfg)
    head = tok(prompt + "\n", add_special_tokens=True)["input_ids"]
    rows = [head + tok(" " + c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in captions]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tok.eos_token_id] * (width - len(r)) for r in rows])
    labels = torch.tensor([[-100] * len(head) + r[len(head):] + [-100] * (width - len(r)) for r in rows])
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    for _ in range(steps):
        noise = torch.randn(len(rows), k, 48)
        embeds = torch.cat([noise, lm.get_input_embeddings()(ids)], 1)
        full = torch.cat([torch.full((len(rows), k), -100), labels], 1)
        loss = lm(inputs_embeds=embeds, labels=full).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lm.eval()


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

    _, tok = smollm2
    captions = ["The lesion is a melanoma.", "The lesion is a nevus."]
    lm = _tiny_lm(tok, captions, "Caption:", k=1)
    images = tmp_path / "images"
    images.mkdir()
    manifest = write_manifest(_patch_images(images, 12), tmp_path / "patches.csv", root=images)
    # pooled patch tokens: a random-init ViT's class token barely depends on the image (layer scale)
    spec = CaptionerSpec(encoder="dermino_vit_tiny_14", encoder_overrides=dict(TINY), patch_grid=1,
                         image_tokens="patch", prompt="Caption:", lora_r=4, projector="linear")
    cfg = CaptionConfig(manifests=[str(manifest)], model=spec, image_size=56, out=str(tmp_path / "run"),
                        max_steps=40, align_steps=15, batch_size=8, projector_lr=1e-2, lora_lr=5e-3,
                        max_caption_tokens=12, max_new_tokens=12, bootstrap=200, meteor=False, progress=False,
                        device="cpu")
    torch.manual_seed(0)
    train_captioner(cfg, lm=copy.deepcopy(lm), tokenizer=tok, encoder=create("dermino_vit_tiny_14", **TINY))
    result = evaluate_run(tmp_path / "run", lm=copy.deepcopy(lm), tokenizer=tok)
    g = result.extra["grounding"]["diagnosis_accuracy"]
    swapped = pd.read_csv(tmp_path / "run" / "results" / result.extra["grounding"]["predictions"])
    assert g["n"] == 8
    assert g["true_image"] >= 0.85, swapped.to_string()
    assert g["swapped_image"] <= 0.15, swapped.to_string()
    assert g["ci_low"] > 0 and result.extra["grounding"]["grounded"]
    assert (swapped["labels"] != swapped["partner_labels"]).all()
