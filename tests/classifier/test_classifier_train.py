"""``classifier train`` end to end on the bundled HAM10000 sample with a tiny random ViT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _serve_fixtures import TINY, ham_images, tiny_classifier
from dermino.classifier.model import load_classifier, save_classifier
from dermino.classifier.train import ClassifierConfig, train_classifier
from dermino.cli import main
from dermino.data.images import read_rgb
from dermino.data.manifest import read_manifest
from dermino.data.sample import sample_manifests
from dermino.models import create


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clf")
    ham = sample_manifests(tmp / "manifests")["ham10000"]
    cfg = ClassifierConfig(manifest=str(ham), out=str(tmp / "clf"), backbone="dermino_vit_tiny_14",
                           backbone_overrides=dict(TINY), image_size=56, epochs=15, n_resamples=30,
                           weight_decays=[0.0, 1e-3],
                           cache_dir=str(tmp / "cache"))
    torch.manual_seed(0)
    out = train_classifier(cfg, backbone=create("dermino_vit_tiny_14", **TINY))
    return out, ham


def test_folder_holds_everything_a_service_needs(trained):
    out, ham = trained
    assert sorted(p.name for p in out.iterdir()) == ["classifier.json", "model.safetensors", "reliability.png",
                                                      "results"]
    info = json.loads((out / "classifier.json").read_text())
    df = read_manifest(ham)
    assert info["label_names"] == sorted({lab for lab in df["labels"]})
    assert info["backbone"]["name"] == "dermino_vit_tiny_14" and info["backbone"]["overrides"]["depth"] == 2
    assert info["preprocessing"]["image_size"] == 56
    n = info["training_data"]["n"]
    assert n["val"] > 0 and n["train"] > n["val"]  # carved from train
    assert n["test"] == int((df["split"] == "test").sum())
    cal = info["calibration"]
    assert cal["fitted_on"] == "val" and cal["evaluated_on"] == "test" and cal["temperature"] > 0
    assert 0 <= cal["ece_after"] <= 1 and 0 <= cal["ece_before"] <= 1
    auroc = info["metrics"]["auroc"]
    assert auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"] and auroc["n"] == n["test"]
    assert list((out / "results").glob("*__classifier.json"))


def test_reload_gives_identical_probabilities(trained, tmp_path):
    out, _ = trained
    clf = load_classifier(out)
    images = [read_rgb(p) for p in ham_images(3)]
    probs, feats = clf.predict(images)
    assert probs.shape == (3, len(clf.label_names)) and np.allclose(probs.sum(1), 1, atol=1e-5)
    save_classifier(clf, tmp_path / "copy")
    again = load_classifier(tmp_path / "copy").predict(images)
    np.testing.assert_allclose(again[0], probs, atol=1e-6)
    # the temperature is applied: probabilities equal softmax(logits / T)
    with torch.inference_mode():
        logits = clf.logits(clf.preprocess(images))
    np.testing.assert_allclose(torch.softmax(logits / clf.temperature, 1).numpy(), probs, atol=1e-6)


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="classifier.json"):
        load_classifier(tmp_path)
    clf = tiny_classifier()
    out = save_classifier(clf, tmp_path / "c")
    cfg = json.loads((out / "classifier.json").read_text())
    cfg["backbone"]["overrides"]["embed_dim"] = 32  # does not match the saved tensors
    (out / "classifier.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="model.safetensors|size mismatch"):
        load_classifier(out)
    (out / "classifier.json").write_text(json.dumps({**cfg, "format": "something-else"}))
    with pytest.raises(ValueError, match="format"):
        load_classifier(out)


def test_cli_rejects_missing_manifest(capsys):
    assert main(["classifier", "train", "--manifest", "/nonexistent/m.csv", "--out", "/tmp/x"]) == 2
    assert "m.csv" in capsys.readouterr().err
