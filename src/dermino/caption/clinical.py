"""Clinical correctness of captions: does the text state the true diagnosis and criteria?

Why: BLEU and CIDEr reward wording, and a fluent caption naming the wrong diagnosis can
score well. Here a caption is parsed back into (a) the diagnoses it names and (b) the
dermoscopic criteria it states as present, and compared with the expert annotation:

* ``diagnosis_accuracy``: share of captions that name the true diagnosis and no other;
* per criterion, precision (stated present and truly present / stated present) and recall
  (stated present and truly present / truly present).

Parsing is rule-based and deliberately simple (regular expressions with clause-local
negation: "no streaks", "without a blue-whitish veil"), so every score can be checked by
reading the caption.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: canonical diagnosis -> phrases that name it (longest matched first)
DIAGNOSIS_SYNONYMS: dict[str, tuple[str, ...]] = {
    "melanoma": ("melanoma",),
    "common nevus": ("common nevus", "common naevus", "banal nevus"),
    "atypical nevus": ("atypical nevus", "atypical naevus", "dysplastic nevus", "dysplastic naevus"),
    "melanocytic nevus": ("melanocytic nevus", "melanocytic naevus"),
    "basal cell carcinoma": ("basal cell carcinoma",),
    "benign keratosis": ("benign keratosis", "seborrheic keratosis", "seborrhoeic keratosis", "solar lentigo"),
    "actinic keratosis / intraepithelial carcinoma": (
        "actinic keratosis or intraepithelial carcinoma", "actinic keratosis", "intraepithelial carcinoma",
        "bowen's disease",
    ),
    "dermatofibroma": ("dermatofibroma",),
    "vascular lesion": ("vascular lesion", "angioma", "haemangioma", "hemangioma", "pyogenic granuloma"),
}

#: criterion -> regular expression of its positive mention
CRITERIA: dict[str, str] = {
    "asymmetry": r"\basymmetr\w*",
    "typical_network": r"\btypical pigment network",
    "atypical_network": r"\batypical pigment network",
    "dots_globules": r"\b(dots|globules)\b",
    "streaks": r"\bstreaks?\b",
    "regression_areas": r"\bregression\b",
    "blue_whitish_veil": r"\bblue-?\s?whitish veil",
    "white": r"(?<!-)\bwhite\b",
    "red": r"\bred\b",
    "light_brown": r"\blight brown\b",
    "dark_brown": r"\bdark brown\b",
    "blue_gray": r"\bblue-?\s?gr[ae]y\b",
    "black": r"\bblack\b",
}
_NEGATION = re.compile(r"\b(no|not|without|absent|lacks?|lacking|neither|nor)\b")
# a clause boundary: negation does not carry across these
_CLAUSE = re.compile(r"[,;:.]|\b(and|with|but|showing|shows)\b")


def _segment_start(text: str, pos: int) -> int:
    start = 0
    for m in _CLAUSE.finditer(text, 0, pos):
        start = m.end()
    return start


def stated_criteria(text: str) -> set[str]:
    """Criteria a caption states as present (a negated mention does not count)."""
    low = text.lower()
    found = set()
    for name, pattern in CRITERIA.items():
        for m in re.finditer(pattern, low):
            head = low[_segment_start(low, m.start()) : m.start()]
            tail = low[m.end() : m.end() + 12]
            if _NEGATION.search(head) or re.match(r"\s*(absent|not seen)", tail):
                continue
            found.add(name)
            break
    return found


def true_criteria_ph2(row: dict) -> set[str] | None:
    """Criteria present according to a PH2 row's annotation; None when the row has none."""
    keys = ("asymmetry", "pigment_network", "dots_globules", "streaks", "regression_areas", "blue_whitish_veil")
    if not any(str(row.get(k, "") or "").strip() for k in keys):
        return None
    code = {k: str(row.get(k, "") or "").strip().upper() for k in keys}
    out = set()
    if code["asymmetry"].split(".")[0] in ("1", "2"):
        out.add("asymmetry")
    if code["pigment_network"] == "T":
        out.add("typical_network")
    if code["pigment_network"] == "AT":
        out.add("atypical_network")
    if code["dots_globules"] in ("T", "AT"):
        out.add("dots_globules")
    for k in ("streaks", "regression_areas", "blue_whitish_veil"):
        if code[k] == "P":
            out.add(k)
    colours = {"color_white": "white", "color_red": "red", "color_light_brown": "light_brown",
               "color_dark_brown": "dark_brown", "color_blue_gray": "blue_gray", "color_black": "black"}
    for col, name in colours.items():
        if str(row.get(col, "")).strip().lower() in ("true", "1", "x"):
            out.add(name)
    return out


class DiagnosisParser:
    """Finds the diagnoses a caption names; ``extra`` labels (e.g. a user's) name themselves."""

    def __init__(self, extra: Iterable[str] = ()):
        phrases: dict[str, str] = {}
        for canon, syns in DIAGNOSIS_SYNONYMS.items():
            for s in syns:
                phrases[s] = canon
        for label in extra:
            if label and label.lower() not in phrases:
                phrases[label.lower()] = label
                if " / " in label:
                    phrases[label.lower().replace(" / ", " or ")] = label
        # longest first, so "atypical nevus" is taken before any shorter phrase inside it
        ordered = sorted(phrases, key=len, reverse=True)
        self._re = re.compile(r"\b(" + "|".join(re.escape(p) for p in ordered) + r")\b")
        self._canon = phrases

    def __call__(self, text: str) -> set[str]:
        low = text.lower()
        found = set()
        for m in self._re.finditer(low):
            head = low[_segment_start(low, m.start()) : m.start()]
            if re.search(r"\b(not|no|rather than|instead of)\b", head):
                continue
            found.add(self._canon[m.group(1)])
        return found


@dataclass
class ClinicalScores:
    diagnosis_correct: np.ndarray  # (N,) bool per caption: true diagnosis named, no other
    criteria: dict[str, dict[str, float]]  # criterion -> precision, recall, support, stated
    criteria_rows: int  # captions with a criteria annotation


def diagnosis_correct(generated: Sequence[str], truths: Sequence[Sequence[str]], parser: DiagnosisParser) -> np.ndarray:
    """Per caption: it names a true diagnosis and no diagnosis outside the truth."""
    out = np.zeros(len(generated), dtype=bool)
    for i, (text, truth) in enumerate(zip(generated, truths, strict=True)):
        named = parser(text)
        out[i] = bool(named) and bool(named & set(truth)) and named <= set(truth)
    return out


def criteria_scores(generated: Sequence[str], truths: Sequence[set[str] | None]) -> tuple[dict[str, dict[str, float]], int]:
    """Per criterion precision/recall over the captions that have an annotation (None rows skipped)."""
    out: dict[str, dict[str, float]] = {}
    rows = [(stated_criteria(g), t) for g, t in zip(generated, truths, strict=True) if t is not None]
    for name in CRITERIA:
        tp = sum(1 for s, t in rows if name in s and name in t)
        stated = sum(1 for s, _ in rows if name in s)
        support = sum(1 for _, t in rows if name in t)
        out[name] = {
            "precision": tp / stated if stated else float("nan"),
            "recall": tp / support if support else float("nan"),
            "stated": stated,
            "support": support,
        }
    return out, len(rows)


def clinical_scores(
    generated: Sequence[str],
    labels: Sequence[Sequence[str]],
    criteria_truth: Sequence[set[str] | None],
) -> ClinicalScores:
    parser = DiagnosisParser({lab for labs in labels for lab in labs})
    correct = diagnosis_correct(generated, labels, parser)
    crit, n = criteria_scores(generated, criteria_truth)
    return ClinicalScores(correct, crit, n)
