"""Disease vocabulary: normalise + similarity-merge real dermatology label names."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest

from dermino.data.disease_names import normalise_disease_name
from dermino.knowledge.encoder import load_text_encoder
from dermino.knowledge.vocabulary import (
    DEFAULT_THRESHOLD,
    Entry,
    UnknownLabelError,
    Vocabulary,
    build_vocabulary,
    cluster_names,
)

HAM10000 = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
PH2 = ["common nevus", "atypical nevus", "melanoma"]
ISIC2017 = ["melanoma", "seborrheic keratosis", "nevus"]

# spelling / abbreviation variants of ONE disease: must end up in one class
SAME = [
    ("naevus", "nevus"),
    ("basal cell carcinoma", "bcc"),
    ("seborrheic keratosis", "seborrhoeic keratosis"),
    ("squamous cell carcinoma", "scc"),
    ("melanoma", "malignant melanoma"),
    ("mel", "melanoma"),
    ("nv", "nevus"),  # HAM10000 code vs ISIC 2017 name
    ("granuloma pyogenic", "pyogenic granuloma"),  # Fitzpatrick17k word order
    ("xanthomas", "xanthoma"),  # plural, left to the embedding merge
    ("keloid", "keloids"),
    ("dermatofibroma", "dermatofibromas"),
    ("erythema annulare centrifigum", "erythema annulare centrifugum"),  # Fitzpatrick17k typo
    ("behcets disease", "behcet disease"),
]
# clearly different diseases (or a disease and its subtype): must stay apart
DIFFERENT = [
    ("melanoma", "melanocytic nevus"),
    ("bcc", "scc"),
    ("psoriasis", "eczema"),
    ("melanoma", "basal cell carcinoma"),
    ("common nevus", "atypical nevus"),
    ("seborrheic keratosis", "seborrheic dermatitis"),
    ("actinic keratosis", "seborrheic keratosis"),
    ("akiec", "actinic keratosis"),
    ("bkl", "seborrheic keratosis"),
    ("psoriasis", "pustular psoriasis"),
    ("melanoma", "lentigo maligna"),
    ("lentigo maligna", "lentigo maligna melanoma"),
    ("basal cell carcinoma", "basal cell carcinoma morpheiform"),
    ("porokeratosis actinic", "disseminated actinic porokeratosis"),
    ("urticaria", "urticaria pigmentosa"),
    ("lupus erythematosus", "lupus subacute"),
    ("lichen planus", "lichen simplex"),
]


@pytest.fixture(scope="session")
def encoder():
    return load_text_encoder()


def _cos(encoder, a: str, b: str) -> float:
    v = encoder.encode([normalise_disease_name(a), normalise_disease_name(b)])
    return float(v[0] @ v[1])


def test_threshold_separates_real_pairs(encoder):
    """The measurement that chose DEFAULT_THRESHOLD: every variant pair scores above it,
    every different-disease pair below it, each with a margin of at least 0.02."""
    same = {p: _cos(encoder, *p) for p in SAME}
    diff = {p: _cos(encoder, *p) for p in DIFFERENT}
    # the table behind the threshold (shown with `pytest -s` or when the test fails)
    print(f"\ncosine after normalisation (merge threshold {DEFAULT_THRESHOLD:.2f})")
    for title, table in (("same disease", same), ("different", diff)):
        for (a, b), s in sorted(table.items(), key=lambda kv: kv[1]):
            print(f"  {title:13s} {s:.3f}  {a} | {b}")
    assert min(same.values()) >= DEFAULT_THRESHOLD + 0.02, same
    assert max(diff.values()) <= DEFAULT_THRESHOLD - 0.02, diff


@pytest.mark.parametrize(("a", "b"), SAME)
def test_variants_merge(encoder, a, b):
    vocab = build_vocabulary([a, b], encoder)
    assert len(vocab) == 1, vocab.mapping
    assert vocab.index(a) == vocab.index(b) == 0


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_diseases_stay_apart(encoder, a, b):
    vocab = build_vocabulary([a, b], encoder)
    assert len(vocab) == 2, vocab.mapping
    assert vocab.index(a) != vocab.index(b)


def test_real_dermoscopy_vocabularies(encoder):
    vocab = build_vocabulary(HAM10000 + PH2 + ISIC2017, encoder)
    assert vocab.canonical == sorted([
        "actinic keratosis / intraepithelial carcinoma", "atypical nevus", "basal cell carcinoma",
        "benign keratosis", "common nevus", "dermatofibroma", "melanocytic nevus", "melanoma",
        "seborrheic keratosis", "vascular lesion",
    ])
    assert vocab.mapping["melanocytic nevus"] == "melanocytic nevus"
    assert vocab.canonical_of("nv") == vocab.canonical_of("nevus") == "melanocytic nevus"
    assert vocab.canonical_of("MEL") == vocab.canonical_of("Melanoma") == "melanoma"
    assert vocab.canonical == sorted(vocab.canonical)
    assert all(0.0 <= s <= 1.0 + 1e-6 for s in vocab.similarity.values())


@pytest.mark.shared_data
def test_fitzpatrick17k_vocabulary(encoder, shared_data):
    raw = pd.read_csv(shared_data / "fitzpatrick17k" / "fitzpatrick17k.csv")["label"]
    assert raw.nunique() == 114
    vocab = build_vocabulary(list(raw) + HAM10000 + PH2 + ISIC2017, encoder)
    # every observed name is mapped
    for name in raw.unique():
        assert vocab.canonical_of(name) in vocab.canonical
    same_class = [
        ("malignant melanoma", "melanoma"), ("mel", "melanoma"),
        ("granuloma pyogenic", "pyogenic granuloma"),
        ("superficial spreading melanoma ssm", "superficial spreading melanoma"),
        ("nevocytic nevus", "nv"),
    ]
    for a, b in same_class:
        assert vocab.index(a) == vocab.index(b), (a, b)
    apart = [
        ("psoriasis", "pustular psoriasis"), ("basal cell carcinoma", "basal cell carcinoma morpheiform"),
        ("basal cell carcinoma", "solid cystic basal cell carcinoma"), ("melanoma", "lentigo maligna"),
        ("squamous cell carcinoma", "basal cell carcinoma"), ("eczema", "dyshidrotic eczema"),
        ("porokeratosis actinic", "disseminated actinic porokeratosis"), ("melanoma", "nevocytic nevus"),
        ("seborrheic keratosis", "seborrheic dermatitis"), ("halo nevus", "congenital nevus"),
    ]
    for a, b in apart:
        assert vocab.index(a) != vocab.index(b), (a, b)
    # 114 Fitzpatrick + 10 dermoscopy names: the overlap is melanoma, bcc, scc, df, ...
    # measured: 117 normalised names, no further similarity merge at the default threshold
    assert len(vocab.entries) == 117
    assert len(vocab) == 117
    assert vocab.merges() == []


class _TableEncoder:
    """Hand-made unit vectors, so merging can be checked against exact similarities."""

    name = "table"

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in vectors.items()}
        self.dim = len(next(iter(vectors.values())))

    def encode(self, texts):
        return np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def _angle(deg: float) -> list[float]:
    return [float(np.cos(np.radians(deg))), float(np.sin(np.radians(deg)))]


def test_complete_linkage_does_not_chain():
    # a~b and b~c at cos(15 deg)=0.966, but a~c only cos(30 deg)=0.866: single linkage would put
    # all three in one class; complete linkage keeps a and c apart
    enc = _TableEncoder({"alpha": _angle(0), "beta": _angle(15), "gamma": _angle(30)})
    vocab = build_vocabulary(["alpha", "beta", "gamma"], enc, threshold=0.9)
    assert len(vocab) == 2
    assert vocab.index("alpha") != vocab.index("gamma")
    ids = cluster_names(enc.encode(["alpha", "beta", "gamma"]), threshold=0.9)
    assert len(set(ids.tolist())) == 2
    # a looser threshold merges everything, a strict one nothing
    assert len(build_vocabulary(["alpha", "beta", "gamma"], enc, threshold=0.85)) == 1
    assert len(build_vocabulary(["alpha", "beta", "gamma"], enc, threshold=0.99)) == 3


def test_representative_is_most_frequent_then_shortest():
    enc = _TableEncoder({"xanthoma": _angle(0), "xanthomas": _angle(5), "xanthomata": _angle(8)})
    names = ["xanthomas"] * 3 + ["xanthoma"] + ["xanthomata"]
    vocab = build_vocabulary(names, enc, threshold=0.95)
    assert vocab.canonical == ["xanthomas"]
    assert vocab.entries[0].count == 3
    assert vocab.similarity["xanthoma"] == pytest.approx(float(np.cos(np.radians(5))), abs=1e-5)
    assert vocab.similarity["xanthomata"] == pytest.approx(float(np.cos(np.radians(3))), abs=1e-5)
    tie = build_vocabulary(["xanthomas", "xanthoma", "xanthomata"], enc, threshold=0.95)
    assert tie.canonical == ["xanthoma"]  # equal counts: shortest name wins


def test_index_errors_are_helpful():
    vocab = Vocabulary([Entry("melanoma", "melanoma"), Entry("melanocytic nevus", "melanocytic nevus")])
    with pytest.raises(KeyError, match="'melanomma' is not in the vocabulary.*closest: 'melanoma'"):
        vocab.index("melanomma")
    with pytest.raises(UnknownLabelError, match="psoriasis"):
        vocab.index("Psoriasis")
    assert vocab.index("Naevus") == 0  # normalised to melanocytic nevus
    assert "NV" in vocab and "psoriasis" not in vocab


def test_threshold_and_input_validation():
    enc = _TableEncoder({"a": [1.0, 0.0]})
    with pytest.raises(ValueError, match="threshold"):
        build_vocabulary(["a"], enc, threshold=1.5)
    with pytest.raises(TypeError, match="strings"):
        build_vocabulary(["a", 3], enc)  # type: ignore[list-item]
    empty = build_vocabulary(["", "  "], enc)
    assert len(empty) == 0 and empty.canonical == []


# ---------------------------------------------------------------------- the review file


@pytest.fixture()
def dermoscopy_vocab(encoder) -> Vocabulary:
    return build_vocabulary(
        ["nv"] * 5 + ["mel"] * 2 + HAM10000 + PH2 + ISIC2017 + ["Seborrhoeic Keratosis"], encoder,
        sources={"nv": ["ham10000"], "nevus": ["isic2017"], "common nevus": ["ph2"]},
    )


def test_save_load_round_trip(dermoscopy_vocab, tmp_path):
    path = dermoscopy_vocab.save(tmp_path / "vocabulary.csv")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["name", "canonical", "similarity", "count", "sources", "variants"]
    row = df.set_index("name").loc["melanocytic nevus"]
    assert row["sources"] == "ham10000;isic2017" and row["count"] == "7"  # 5 + 1 nv, 1 nevus
    assert set(row["variants"].split(";")) == {"nv", "nevus"}
    loaded = Vocabulary.load(path)
    assert loaded.canonical == dermoscopy_vocab.canonical
    assert loaded.mapping == dermoscopy_vocab.mapping
    for name, s in dermoscopy_vocab.similarity.items():
        assert loaded.similarity[name] == pytest.approx(s, abs=1e-4)
    assert [e.sources for e in loaded.entries] == [e.sources for e in dermoscopy_vocab.entries]


def test_hand_edited_mapping_is_honoured(dermoscopy_vocab, tmp_path):
    path = dermoscopy_vocab.save(tmp_path / "vocabulary.csv")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    # a clinician merges the PH2 nevus grades into melanocytic nevus (typed in British spelling),
    # and adds a synonym row with no similarity
    df.loc[df["name"].isin(["common nevus", "atypical nevus"]), "canonical"] = "Melanocytic Naevus"
    df.loc[len(df)] = {"name": "Clark nevus", "canonical": "melanoma", "similarity": "", "count": "",
                       "sources": "", "variants": ""}
    df.to_csv(path, index=False)
    # dysplastic/clark nevus normalise to 'atypical nevus', which is already a row: conflict
    with pytest.raises(ValueError, match=r"vocabulary.csv:\d+: 'Clark nevus' is mapped to 'melanoma'"):
        Vocabulary.load(path)
    df = df[df["name"] != "Clark nevus"]
    df.loc[len(df)] = {"name": "mole", "canonical": "melanocytic nevus", "similarity": "", "count": "",
                       "sources": "", "variants": ""}
    df.to_csv(path, index=False)
    edited = Vocabulary.load(path)
    assert len(edited) == len(dermoscopy_vocab) - 2
    assert "common nevus" not in edited.canonical and "atypical nevus" not in edited.canonical
    assert edited.index("atypical nevus") == edited.index("common nevus") == edited.index("nv") == edited.index("mole")
    assert np.isnan(edited.similarity["mole"])
    # and the edit survives another save/load
    assert Vocabulary.load(edited.save(tmp_path / "again.csv")).mapping == edited.mapping


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,canon\nmelanoma,melanoma\n", r"missing column\(s\) \['canonical'\]"),
        ("name,canonical\nmelanoma,\n", r"x.csv:2: name 'melanoma' has an empty 'canonical'"),
        ("name,canonical\n,melanoma\n", r"x.csv:2: empty 'name'"),
        ("name,canonical\nmel,melanoma\nmelanoma,melanoma\nMelanoma,nevus\n", r"x.csv:4: .*line 2 maps the same name to .melanoma."),
        ("name,canonical\nnevus,mole\nmole,melanoma\n", r"x.csv:2: .*straight at 'melanoma'"),
        ("name,canonical,similarity\nmelanoma,melanoma,high\n", r"x.csv:2: similarity 'high' is not a number"),
        ("name,canonical\n", "no rows"),
    ],
)
def test_load_rejects_broken_files(tmp_path, content, message):
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        Vocabulary.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        Vocabulary.load(tmp_path / "nope.csv")
