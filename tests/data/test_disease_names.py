"""Disease-name normalisation: every source lands in one vocabulary."""

from __future__ import annotations

import pytest

from dermino.data.disease_names import label_space, normalise_disease_name, normalise_labels


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("nv", "melanocytic nevus"),
        ("NV", "melanocytic nevus"),
        ("mel", "melanoma"),
        ("bcc", "basal cell carcinoma"),
        ("SCC", "squamous cell carcinoma"),
        ("akiec", "actinic keratosis / intraepithelial carcinoma"),
        ("Actinic keratosis/Intraepithelial carcinoma", "actinic keratosis / intraepithelial carcinoma"),
        ("bkl", "benign keratosis"),
        ("df", "dermatofibroma"),
        ("vasc", "vascular lesion"),
        ("Melanocytic  Naevi", "melanocytic nevus"),
        ("naevus", "melanocytic nevus"),
        ("Becker Naevus", "becker nevus"),
        ("Basal-cell carcinoma", "basal cell carcinoma"),
        ("  Malignant melanoma. ", "melanoma"),
        ("Darier's disease", "dariers disease"),  # as Fitzpatrick17k spells it
        ("\uff42\uff43\uff43", "basal cell carcinoma"),  # full-width letters (NFKC)
        ("Seborrhoeic keratosis", "seborrheic keratosis"),
        ("granuloma pyogenic", "pyogenic granuloma"),
        ("common nevus", "common nevus"),
        (None, ""),
        (float("nan"), ""),
        ("  ", ""),
    ],
)
def test_normalise(raw, canonical):
    assert normalise_disease_name(raw) == canonical


def test_idempotent_on_fitzpatrick_vocabulary(shared_data):
    import pandas as pd

    labels = pd.read_csv(shared_data / "fitzpatrick17k" / "fitzpatrick17k.csv")["label"].unique()
    once = {normalise_disease_name(x) for x in labels}
    assert {normalise_disease_name(x) for x in once} == once
    assert "" not in once
    # the obvious duplicates of the raw vocabulary collapse
    assert normalise_disease_name("malignant melanoma") == normalise_disease_name("melanoma")
    assert normalise_disease_name("granuloma pyogenic") == normalise_disease_name("pyogenic granuloma")
    assert len(once) < len(labels)


def test_labels_and_label_space():
    assert normalise_labels(["nv", "Melanoma", "", "NV"]) == ["melanocytic nevus", "melanoma"]
    assert label_space(["mel", "nv", "mel", None]) == "melanocytic nevus;melanoma"
    assert ";" not in normalise_disease_name("a;b")
