"""End to end on a synthetic task where the label is visible: each class carries its own colour
patch. A few hundred CPU steps of hybrid pretraining must bring the *held-out* knowledge loss far
below the class-prior level, zero-shot diagnosis with synonyms of the trained names must beat
chance, and the run (given no vocabulary file) must merge the names itself and save them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dermino.pretrain.config import tiny_config
from dermino.pretrain.trainer import pretrain

# class -> patch colour; the labels are spelled differently in places (merged by the run)
CLASSES = {"melanoma": (200, 30, 30), "basal cell carcinoma": (30, 170, 40), "vascular lesion": (40, 60, 210)}
SPELLINGS = {"basal cell carcinoma": ["basal cell carcinoma", "BCC"], "melanoma": ["melanoma", "Melanoma"],
             "vascular lesion": ["vascular lesion"]}
SYNONYMS = {"melanoma": "malignant melanoma", "basal cell carcinoma": "basal cell cancer",
            "vascular lesion": "vascular skin lesion"}
FREQ = {"melanoma": 0.5, "basal cell carcinoma": 0.3, "vascular lesion": 0.2}  # unequal: a real prior


def _write_images(folder, n: int, seed: int, split: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(CLASSES)
    labels = rng.choice(names, size=n, p=[FREQ[c] for c in names])
    rows = []
    for i, label in enumerate(labels):
        img = rng.integers(90, 160, size=(42, 42, 3)).astype(np.uint8)  # grey noise "skin"
        top, left = rng.integers(4, 14, size=2)
        img[top:top + 24, left:left + 24] = np.clip(np.array(CLASSES[label]) + rng.integers(-20, 20, 3), 0, 255)
        path = folder / f"{split}_{i:03d}.png"
        Image.fromarray(img).save(path)
        spelling = SPELLINGS[label][i % len(SPELLINGS[label])]
        rows.append({"image": str(path), "source": "synthetic", "split": split, "labels": spelling,
                     "label_space": ";".join(names)})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_colour_patches_beat_the_class_prior_and_zero_shot_beats_chance(tmp_path):
    from dermino.evaluate.zero_shot import ZeroShotConfig, run_zero_shot
    from dermino.features import EmbedConfig

    train = _write_images(tmp_path / "img", 160, seed=0, split="train")
    heldout = _write_images(tmp_path / "img", 90, seed=1, split="test")
    train.to_csv(tmp_path / "train.csv", index=False)
    heldout.to_csv(tmp_path / "heldout.csv", index=False)

    cfg = tiny_config(str(tmp_path / "run"), checkpoint_every=1000, log_every=25, threads=1)
    cfg.model.layerscale_init = 0.1  # 1e-5 keeps CLS near-identical across images for longer than this test
    cfg.data.manifests = [str(tmp_path / "train.csv")]
    cfg.data.splits = ["train"]
    cfg.crops.global_size, cfg.crops.local_size, cfg.crops.n_local = 28, 14, 2
    cfg.crops.jitter_p = cfg.crops.grayscale_p = cfg.crops.solarize_p_global2 = 0.0  # colour is the signal
    cfg.crops.global_scale = (0.6, 1.0)
    cfg.losses.knowledge.prototypes = "text"  # the packaged MiniLM: real text knowledge, offline
    cfg.losses.knowledge.heldout = [str(tmp_path / "heldout.csv")]
    cfg.losses.knowledge.heldout_every = 50
    cfg.optim.base_lr = 2e-2
    cfg.schedule.batch_size = 16
    cfg.schedule.budget_steps = 150
    out = pretrain(cfg)

    # names merged by default: vocabulary.csv in the run folder, one class per disease
    vocab = pd.read_csv(out / "vocabulary.csv")
    assert sorted(vocab["canonical"].unique()) == sorted(CLASSES)
    assert json.loads((out / "knowledge.json").read_text())["classes"] == sorted(CLASSES)

    m = pd.read_csv(out / "metrics.csv").dropna(subset=["knowledge_heldout"])
    assert m["step"].tolist() == [50, 100, 150]
    last = m.iloc[-1]
    assert last["knowledge_heldout"] < 0.5 * last["knowledge_heldout_prior"], last.to_dict()
    assert last["knowledge_heldout_auroc"] > 0.9
    assert last["knowledge_cos_own"] > last["knowledge_cos_other"]

    torch.manual_seed(0)
    res = run_zero_shot(
        "dermino_vit_tiny_14", str(out / "export" / "teacher_backbone.pt"), str(tmp_path / "heldout.csv"),
        ZeroShotConfig(prompts=SYNONYMS),
        overrides={"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28},
        embed=EmbedConfig(image_size=28, cache_dir=str(tmp_path / "cache")), bootstrap=200,
    )
    assert res["prompts"] == [SYNONYMS[c] for c in res["classes"]]
    assert res["seen_in_training"] == []  # every scored text is new to the head
    auroc = res["trained"]["auroc"]
    assert auroc["ci_low"] > 0.5, res  # beats chance
    assert auroc["value"] > res["random_init"]["auroc"]["value"]

    # the same through the CLI and as a protocol of an evaluation config (embeddings are cached)
    from dermino.cli import main as cli
    from dermino.evaluate.config import BackboneSpec, DatasetSpec, EvalConfig
    from dermino.evaluate.runner import run_evaluation
    from dermino.results import read_results

    weights = str(out / "export" / "teacher_backbone.pt")
    arch = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}
    assert cli(["zero-shot", str(tmp_path / "heldout.csv"), "--weights", weights, "--overrides", json.dumps(arch),
                "--image-size", "28", "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "50",
                "--prompt", "melanoma=malignant melanoma"]) == 0
    pd.concat([train, heldout]).to_csv(tmp_path / "all.csv", index=False)
    ecfg = EvalConfig(out_dir=str(tmp_path / "eval"), protocols=["zeroshot"], bootstrap=50, progress=False,
                      backbones=[BackboneSpec("hybrid", "dermino_vit_tiny_14", weights, arch)],
                      datasets=[DatasetSpec("synthetic", str(tmp_path / "all.csv"), test_split="test", val_split="")])
    ecfg.embed.image_size, ecfg.embed.cache_dir = 28, str(tmp_path / "cache")
    ecfg.zeroshot.prompts, ecfg.zeroshot.splits = SYNONYMS, ["test"]
    run_evaluation(ecfg)
    results = {(r.backbone, r.task): r for r in read_results(tmp_path / "eval" / "results")}
    assert results[("hybrid", "zeroshot")].metrics["auroc"].value == pytest.approx(auroc["value"])
    assert ("hybrid@init", "zeroshot") in results
