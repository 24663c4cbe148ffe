"""The captioning recipe: balanced sampling, the projector-alignment stage, cached encoder features."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dermino.caption.train import epoch_order, stage_lr_factor

TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 56}


def test_balanced_sampling_draws_each_diagnosis_equally():
    labels = ["nevus"] * 90 + ["melanoma"] * 9 + ["dermatofibroma"] * 1
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([epoch_order(len(labels), labels, "balanced", gen) for _ in range(60)]).numpy()
    share = np.bincount([{"nevus": 0, "melanoma": 1, "dermatofibroma": 2}[labels[i]] for i in draws]) / len(draws)
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.02)
    # uniform: one permutation per epoch, every row once
    order = epoch_order(len(labels), labels, "uniform", torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(len(labels)))
    # the same seed, the same draws
    a = epoch_order(100, labels, "balanced", torch.Generator().manual_seed(3))
    b = epoch_order(100, labels, "balanced", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_alignment_stage_keeps_lora_at_zero_then_warms_up():
    total, align = 20, 5
    assert [stage_lr_factor("lora", s, total, align, 0) for s in range(align)] == [0.0] * align
    assert stage_lr_factor("lora", align, total, align, 0) == pytest.approx(1.0)
    assert stage_lr_factor("lora", align, total, align, 4) == pytest.approx(0.25)  # its own warm-up
    assert stage_lr_factor("projector", 0, total, align, 0) == pytest.approx(1.0)
    assert stage_lr_factor("projector", total - 1, total, align, 0) < 0.05  # one cosine over the whole run


@pytest.fixture(scope="module")
def ph2_manifest(tmp_path_factory):
    from dermino.caption.data import make_captions
    from dermino.data.adapters import ph2
    from dermino.data.manifest import write_manifest
    from dermino.data.sample import sample_root
    from dermino.data.splits import assign_splits

    df = make_captions(ph2.build_manifest(sample_root() / "ph2"), short=True)[0]
    df = assign_splits(df, test_fraction=0.5, val_fraction=0.0, seed=0)
    return write_manifest(df, tmp_path_factory.mktemp("caption") / "ph2.csv", root=sample_root() / "ph2")


def test_alignment_stage_trains_the_projector_alone_and_features_come_from_the_cache(smollm2, ph2_manifest,
                                                                                     tmp_path):
    from dermino.caption.config import CaptionConfig
    from dermino.caption.data import load_examples
    from dermino.caption.generate import encode_paths
    from dermino.caption.model import CaptionerSpec, build_captioner
    from dermino.caption.train import fit
    from dermino.models import create

    lm, tok = smollm2
    spec = CaptionerSpec(encoder="dermino_vit_tiny_14", encoder_overrides=dict(TINY), patch_grid=2,
                         prompt="Caption:", lora_r=4)
    torch.manual_seed(0)
    cap = build_captioner(spec, lm=copy.deepcopy(lm), tokenizer=tok, encoder=create("dermino_vit_tiny_14", **TINY))
    examples, _ = load_examples([str(ph2_manifest)], "train")
    paths = [e.image for e in examples]
    cache = tmp_path / "features"
    fresh = encode_paths(cap, paths, 56, progress=False)
    first = encode_paths(cap, paths, 56, progress=False, cache_dir=cache)
    assert torch.equal(first, fresh) and len(list(cache.glob("*.npy"))) == 1
    cap.encoder.forward_features = None  # a cache hit must not run the encoder
    assert torch.equal(encode_paths(cap, paths, 56, progress=False, cache_dir=cache), fresh)

    lora_before = {n: p.detach().clone() for n, p in cap.lm.named_parameters() if "lora_" in n}
    proj_before = [p.detach().clone() for p in cap.projector.parameters()]
    seen = []

    def after_step(optimizer, args, kwargs):
        lora_same = all(torch.equal(p, lora_before[n]) for n, p in cap.lm.named_parameters() if "lora_" in n)
        proj_same = all(torch.equal(a, b) for a, b in zip(proj_before, cap.projector.parameters(), strict=True))
        seen.append((lora_same, proj_same))

    cfg = CaptionConfig(manifests=[str(ph2_manifest)], model=spec, image_size=56, out=str(tmp_path / "run"),
                        max_steps=1, align_steps=2, batch_size=2, projector_lr=2e-3, lora_lr=2e-3,
                        max_caption_tokens=16, progress=False, device="cpu", sampling="balanced")
    from torch.optim.optimizer import register_optimizer_step_post_hook

    (tmp_path / "run").mkdir()
    handle = register_optimizer_step_post_hook(after_step)
    try:
        summary = fit(cap, fresh, [e.caption for e in examples], cfg, torch.device("cpu"), tmp_path / "run",
                      labels=[e.labels[0] for e in examples])
    finally:
        handle.remove()
    assert summary.steps == 3
    # steps 1-2 (alignment): the projector moves, LoRA stays; step 3: LoRA moves too
    assert [lora for lora, _ in seen] == [True, True, False]
    assert not any(proj for _, proj in seen)
