"""Presets (`dermino evaluate --preset`), zero-shot through a text tower, and the new protocols end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from _fake_vl import NAME, HashTextTower, register_fake, unregister_fake
from dermino.data.disease_names import normalise_disease_name
from dermino.evaluate.presets import PRESETS, load_eval_config, preset_data
from dermino.evaluate.zero_shot_text import (
    class_text_embeddings,
    find_prompts,
    load_prompts,
    to_task_classes,
    zero_shot_text_probs,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "eval" / "prompts").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_prompt_files_load_with_canonical_names(path):
    prompts = load_prompts(path)
    assert len(prompts) >= 2
    for name in prompts:
        assert normalise_disease_name(name) == name
    assert yaml.safe_load(path.read_text())["dataset"] == path.stem


def test_find_prompts_by_longest_prefix(tmp_path):
    assert find_prompts("isic2017-melanoma-sample").name == "isic2017.yaml"
    assert find_prompts("ham10000").name == "ham10000.yaml"
    assert find_prompts("no-such-dataset") is None
    assert find_prompts("x", explicit=str(tmp_path / "p.yaml")) == tmp_path / "p.yaml"


def test_zero_shot_scores_hand_worked():
    probs = zero_shot_text_probs(np.array([[2.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]), logit_scale=10.0)
    e = np.exp([10.0, 0.0])
    np.testing.assert_allclose(probs[0], e / e.sum())
    p = np.array([[0.2, 0.5, 0.3]])  # prompt classes: melanoma, nevus, keratosis
    binary = to_task_classes(p, ["melanoma", "melanocytic nevus", "seborrheic keratosis"], ["not mel", "mel"], "mel")
    np.testing.assert_allclose(binary, [[0.8, 0.2]])
    multi = to_task_classes(p, ["melanoma", "melanocytic nevus", "seborrheic keratosis"], ["nv", "mel"])
    np.testing.assert_allclose(multi, [[0.5 / 0.7, 0.2 / 0.7]])
    with pytest.raises(ValueError, match="no prompts"):
        to_task_classes(p, ["melanoma", "melanocytic nevus", "seborrheic keratosis"], ["dermatofibroma", "mel"])


def test_prompt_ensemble_uses_the_template():
    tower = HashTextTower(8)
    names, emb = class_text_embeddings(tower, {"melanoma": ["melanoma", "malignant melanoma"]})
    ref = tower.encode(["a dermoscopic image of melanoma.", "a dermoscopic image of malignant melanoma."]).numpy()
    mean = ref.mean(0)
    np.testing.assert_allclose(emb[0], mean / np.linalg.norm(mean), atol=1e-6)
    assert names == ["melanoma"]


def test_preset_then_config_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"backbones": [{"name": "a"}], "datasets": [{"name": "d", "manifest": "m.csv"}],
                                    "label_efficiency": {"seeds": 2}}))
    cfg = load_eval_config(str(path), ["bootstrap=50"], "label-efficiency")
    assert cfg.protocols == ["label_efficiency"] and cfg.preset == "label-efficiency"
    assert cfg.label_efficiency.fractions == [0.01, 0.1, 0.3, 0.5, 1.0] and cfg.label_efficiency.seeds == 2
    assert cfg.bootstrap == 50
    assert preset_data("dermino-paper", {"protocols": ["knn"]})["protocols"] == ["knn"]  # config keys win
    with pytest.raises(ValueError, match="unknown preset"):
        preset_data("nope")
    for name in PRESETS:  # every preset is a valid config
        cfg = load_eval_config(str(path), [], name)
        cfg.validate()


@pytest.fixture
def fake_vl():
    register_fake()
    yield NAME
    unregister_fake()


@pytest.mark.slow
def test_presets_end_to_end_with_a_text_capable_backbone(fake_vl, tmp_path):
    from dermino.cli import main
    from dermino.data.sample import sample_manifests
    from dermino.results import read_results

    ham = sample_manifests(tmp_path / "manifests")["ham10000"]
    df = pd.read_csv(ham, dtype=str, keep_default_na=False)
    df["caption"] = ["dermoscopy of " + lab for lab in df["labels"]]  # captions for image-to-text
    df.to_csv(ham, index=False)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "out"), "progress": False, "bootstrap": 30,
        "backbones": [{"name": "vl", "model": fake_vl}, {"name": "vl2", "model": fake_vl, "overrides": {"seed": 1}}],
        "datasets": [{"name": "ham10000-sample", "manifest": str(ham)}],
        "embed": {"image_size": 28, "batch_size": 64, "cache_dir": str(tmp_path / "cache")},
        "linear": {"Cs": [0.1, 1.0]},
        "label_efficiency": {"fractions": [0.1, 1.0], "seeds": 2},
    }))
    for preset in ("zero-shot", "retrieval", "label-efficiency"):
        assert main(["evaluate", "--preset", preset, "--config", str(path)]) == 0
    res = {(r.backbone, r.task): r for r in read_results(tmp_path / "out" / "results")}
    zs = res[("vl", "zeroshot-text")]
    assert zs.config["prompts_file"].endswith("ham10000.yaml") and 0 <= zs.metrics["auroc"].value <= 1
    ret = res[("vl", "retrieval")]
    assert {"r@1", "r@5", "r@10", "map", "i2t_r@1", "i2t_r@10"} <= set(ret.metrics)
    le = res[("vl", "label-efficiency")]
    assert {"auroc@0.1", "auroc@1", "aulc"} <= set(le.metrics)
    digests = lambda r: {k: v["rows"] for k, v in r.extra["subsets"].items()}  # noqa: E731
    assert digests(le) == digests(res[("vl2", "label-efficiency")])
