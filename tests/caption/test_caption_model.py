"""Captioner: frozen encoder -> projector -> SmolLM2-135M with LoRA, on real PH2 images (CPU)."""

from __future__ import annotations

import copy
import csv
import json
import re

import pytest
import torch

from dermino.caption.config import CaptionConfig
from dermino.caption.data import make_captions
from dermino.caption.lm import LMLoadError, resolve_lm
from dermino.caption.model import CaptionerSpec, build_captioner, load_captioner
from dermino.caption.train import train_captioner
from dermino.data.adapters import ph2
from dermino.data.manifest import write_manifest
from dermino.data.sample import sample_root
from dermino.models import create

TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 56}


def _encoder():
    torch.manual_seed(0)
    return create("dermino_vit_tiny_14", **TINY)


def _spec(**kw) -> CaptionerSpec:
    return CaptionerSpec(encoder="dermino_vit_tiny_14", encoder_overrides=dict(TINY), patch_grid=2,
                         prompt="Caption:", lora_r=4, **kw)


def test_lm_folder_without_weights_fails_clearly(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LMLoadError, match="no language-model weights"):
        resolve_lm(str(tmp_path))
    with pytest.raises(LMLoadError, match="not found"):
        resolve_lm(str(tmp_path / "missing.gguf"))


def test_only_projector_and_lora_learn(smollm2):
    lm, tok = smollm2
    cap = build_captioner(_spec(), lm=copy.deepcopy(lm), tokenizer=tok, encoder=_encoder())
    enc_before = {k: v.clone() for k, v in cap.encoder.state_dict().items()}
    base = cap.lm.get_base_model()
    lm_before = {k: v.clone() for k, v in base.state_dict().items() if "lora_" not in k}
    groups = cap.trainable_parameters()
    trainable = {id(p) for p in groups["projector"] + groups["lora"]}
    assert trainable and all(not p.requires_grad for p in cap.parameters() if id(p) not in trainable)
    opt = torch.optim.AdamW([{"params": groups["projector"], "lr": 1e-2}, {"params": groups["lora"], "lr": 1e-2}])
    feats = cap.encode_images(torch.randn(2, 3, 56, 56))
    for _ in range(2):
        loss = cap(feats, ["A melanoma.", "A common nevus."])
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in cap.encoder.parameters())
        assert all(p.grad is None for n, p in base.named_parameters() if "lora_" not in n)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["lora"])
        assert all(p.grad is not None for p in groups["projector"])
        opt.step()
    assert all(torch.equal(v, cap.encoder.state_dict()[k]) for k, v in enc_before.items())
    after = {k: v for k, v in base.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(v, after[k]) for k, v in lm_before.items())


def test_long_prompt_is_cut_with_a_warning(smollm2):
    lm, tok = smollm2
    cap = build_captioner(_spec(max_length=24), lm=copy.deepcopy(lm), tokenizer=tok, encoder=_encoder())
    cap.spec.prompt = "describe " * 40
    with pytest.warns(UserWarning, match="prompt of .* tokens is longer"):
        ids = cap.prompt_ids(reserve=8)
    assert len(ids) == 24 - cap.n_image_tokens - 8
    out = cap.generate(cap.encode_images(torch.randn(1, 3, 56, 56)), max_new_tokens=4)
    assert len(out) == 1


@pytest.fixture(scope="module")
def ph2_manifest(tmp_path_factory):
    """The bundled PH2 sample with short captions (diagnosis + symmetry), 8 train / 4 test images."""
    from dermino.data.splits import assign_splits

    df = make_captions(ph2.build_manifest(sample_root() / "ph2"), short=True)[0]
    df = assign_splits(df, test_fraction=0.5, val_fraction=0.0, seed=0)
    out = tmp_path_factory.mktemp("caption") / "ph2.csv"
    return write_manifest(df, out, root=sample_root() / "ph2")


@pytest.mark.slow
def test_short_cpu_fit_save_reload_and_report(smollm2, ph2_manifest, tmp_path):
    from dermino.caption.clinical import DiagnosisParser
    from dermino.caption.evaluate import evaluate_run
    from dermino.caption.generate import caption_images, encode_paths, generate_captions
    from dermino.report.captioning import render_captioning_html

    lm, tok = smollm2
    cfg = CaptionConfig(manifests=[str(ph2_manifest)], model=_spec(), image_size=56, out=str(tmp_path / "run"),
                        max_steps=14, batch_size=8, max_train=8, max_test=4, projector_lr=2e-3, lora_lr=2e-3,
                        max_caption_tokens=20, max_new_tokens=12, bootstrap=50, meteor=False, progress=False,
                        device="cpu", log_every=1)
    summary = train_captioner(cfg, lm=copy.deepcopy(lm), tokenizer=tok, encoder=_encoder())
    assert summary.steps == 14 and summary.n_train == 8
    assert summary.last_loss < 0.6 * summary.first_loss  # the same 8 captions every step: the loss falls
    assert summary.seconds_per_step > 0 and summary.peak_memory_mb > 0

    run = summary.run
    result = evaluate_run(run, lm=copy.deepcopy(lm), tokenizer=tok)
    assert result.task == "captioning" and result.extra["meteor_skipped"]
    assert result.extra["criteria_rows"] == 4 and "criteria_recall_macro" in result.metrics  # PH2 rows found
    for name in ("bleu1", "bleu4", "cider", "rougeL", "diagnosis_accuracy"):
        m = result.metrics[name]
        assert m.n == 4 and m.ci_low is not None and m.ci_low <= m.value + 1e-9 <= m.ci_high + 2e-9
    preds = (run / "results" / result.extra["predictions"]).read_text().splitlines()[1:]
    assert len(preds) == 4
    with (run / "results" / result.extra["predictions"]).open() as f:
        gens = [row["generated"] for row in csv.DictReader(f)]
    assert all(g.strip() for g in gens)
    # the captions name a diagnosis: PH2's (nevus / melanoma), at least one exactly as the parser reads it
    assert sum(bool(re.search(r"\b(nevus|naevus|melanoma)\b", g.lower())) for g in gens) >= 3
    assert any(DiagnosisParser()(g) for g in gens)

    # save -> reload gives the same generations (greedy and beam search)
    cap1 = load_captioner(run, lm=copy.deepcopy(lm), tokenizer=tok)
    cap2 = load_captioner(run, lm=copy.deepcopy(lm), tokenizer=tok)
    paths = sorted((sample_root() / "ph2" / "images").glob("*.jpg"))[:2]
    f1 = encode_paths(cap1, paths, 56, progress=False)
    f2 = encode_paths(cap2, paths, 56, progress=False)
    assert torch.equal(f1, f2)
    assert generate_captions(cap1, f1, max_new_tokens=10, progress=False) == \
        generate_captions(cap2, f2, max_new_tokens=10, progress=False)
    assert generate_captions(cap1, f1, max_new_tokens=6, num_beams=2, progress=False) == \
        generate_captions(cap2, f2, max_new_tokens=6, num_beams=2, progress=False)
    pairs = caption_images(cap1, [paths[0]], 56, out_csv=tmp_path / "gen.csv", max_new_tokens=10, progress=False)
    assert pairs[0][1] == generate_captions(cap1, f1[:1], max_new_tokens=10, progress=False)[0]
    assert (tmp_path / "gen.csv").read_text().splitlines()[0] == "image,caption"
    meta = json.loads((run / "captioner.json").read_text())
    assert meta["steps"] == 14

    html = render_captioning_html(run / "results")
    text = html.read_text()
    assert "diagnosis_accuracy" in text and "data:image/jpeg;base64" in text and "generated" in text


def test_cli_lm_without_weights_one_clear_message(ph2_manifest, tmp_path, capsys):
    from dermino.cli import main

    empty = tmp_path / "my_lm"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    code = main(["caption", "train", "--manifest", str(ph2_manifest), "--lm", str(empty), "--out", str(tmp_path / "r"),
                 "model.encoder=dermino_vit_tiny_14", "model.encoder_overrides={depth: 1, embed_dim: 64, num_heads: 2}"])
    err = capsys.readouterr().err
    assert code == 2 and "no language-model weights" in err and str(empty) in err
    assert len(err.strip().splitlines()) == 1
