"""One canonical spelling for every disease name, shared by all adapters.

Sources spell the same diagnosis differently ("nv", "Naevus", "melanocytic nevi",
"Basal-cell carcinoma"). Labels from different datasets only meet in one label space
(kNN, the knowledge loss's prototype matrix) if they are written the same way, so every
adapter passes its labels through :func:`normalise_disease_name`. This module does the
deterministic part (spelling, punctuation, abbreviations, exact synonyms); merging of
near-synonyms by text-embedding similarity lives in ``dermino.knowledge.vocabulary``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

#: Whole-name abbreviations used by public datasets (HAM10000 ``dx`` codes, ISIC, clinics).
ABBREVIATIONS: dict[str, str] = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "ak": "actinic keratosis",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "mm": "melanoma",
    "nv": "melanocytic nevus",
    "scc": "squamous cell carcinoma",
    "sk": "seborrheic keratosis",
    "vasc": "vascular lesion",
    "lm": "lentigo maligna",
    "lmm": "lentigo maligna melanoma",
    "ssm": "superficial spreading melanoma",
    "ks": "kaposi sarcoma",
    "bd": "bowen disease",
}

#: Exact synonyms: different words for one diagnosis (applied after spelling fixes).
SYNONYMS: dict[str, str] = {
    "nevus": "melanocytic nevus",
    "nevi": "melanocytic nevus",
    "melanocytic nevi": "melanocytic nevus",
    "nevocytic nevus": "melanocytic nevus",
    "nevocellular nevus": "melanocytic nevus",
    "malignant melanoma": "melanoma",
    "pigmented benign keratosis": "benign keratosis",
    "benign keratosis like lesions": "benign keratosis",
    "benign keratosis like lesion": "benign keratosis",
    "granuloma pyogenic": "pyogenic granuloma",
    "vascular lesions": "vascular lesion",
    "basal cell carcinomas": "basal cell carcinoma",
    "bowens disease": "bowen disease",
    "actinic keratoses": "actinic keratosis",
    "actinic keratoses and intraepithelial carcinoma": "actinic keratosis / intraepithelial carcinoma",
    "actinic keratosis and intraepithelial carcinoma": "actinic keratosis / intraepithelial carcinoma",
    "superficial spreading melanoma ssm": "superficial spreading melanoma",
    "seborrhoeic keratosis": "seborrheic keratosis",
    "seborrheic keratoses": "seborrheic keratosis",
    "common nevi": "common nevus",
    "atypical nevi": "atypical nevus",
    "dysplastic nevus": "atypical nevus",
    "clark nevus": "atypical nevus",
}

# British -> American spellings, applied word by word ("naevus" -> "nevus").
_SPELLING: dict[str, str] = {
    "naevus": "nevus",
    "naevi": "nevi",
    "naevoid": "nevoid",
    "haemangioma": "hemangioma",
    "haemangiomas": "hemangiomas",
    "oedema": "edema",
    "tumour": "tumor",
    "tumours": "tumors",
    "seborrhoeic": "seborrheic",
    "leucoplakia": "leukoplakia",
    "oesophageal": "esophageal",
}

_APOSTROPHES = re.compile(r"['\u2019\u2018`´]")
_SLASH = re.compile(r"\s*/\s*")
# anything that is not a letter, digit, space or '/' becomes a space
_PUNCT = re.compile(r"[^\w\s/]|_")
_SPACES = re.compile(r"\s+")


def normalise_disease_name(name: object) -> str:
    """Canonical form of one disease name: ``' Melanocytic Naevi '`` -> ``'melanocytic nevus'``.

    Steps: Unicode NFKC, lowercase, drop apostrophes ("Darier's" -> "dariers", which is how
    Fitzpatrick17k writes it), punctuation -> space, collapse whitespace, British spellings,
    then whole-name abbreviations and synonyms. Word order is kept (that is semantics, left
    to the similarity merge). Idempotent: normalising a canonical name returns it unchanged.
    Empty / None / NaN -> ``''``.
    """
    if name is None or (isinstance(name, float) and name != name):
        return ""
    text = unicodedata.normalize("NFKC", str(name)).lower()
    text = _APOSTROPHES.sub("", text)
    text = _PUNCT.sub(" ", text)
    text = _SLASH.sub(" / ", text)
    text = _SPACES.sub(" ", text).strip().strip("/").strip()
    if not text:
        return ""
    text = " ".join(_SPELLING.get(w, w) for w in text.split(" "))
    text = ABBREVIATIONS.get(text, text)
    return SYNONYMS.get(text, text)


def normalise_labels(names: Iterable[object]) -> list[str]:
    """Normalise several names, dropping empties and duplicates, keeping first-seen order."""
    return list(dict.fromkeys(n for n in (normalise_disease_name(x) for x in names) if n))


def label_space(names: Iterable[object]) -> str:
    """The ``label_space`` cell of a source: its sorted canonical labels joined with ';'."""
    return ";".join(sorted(set(normalise_labels(names))))
