"""Closed-form criteria question answering from PH2's dermoscopic annotations.

Why closed-form: a yes/no question about one criterion ("Is there a blue-whitish veil?") has one
right answer in PH2's annotation, so an answer can be scored without n-gram metrics, per
criterion, with balanced accuracy (PH2's criteria are rare: "no" everywhere would score a high
plain accuracy) and the macro F1 of the yes and no classes.

Questions and answers are generated from the annotation with seeded templates, the same way as
the captions (:func:`dermino.caption.data.make_captions`): each annotated image gets one question
per criterion, its wording drawn from :data:`QUESTIONS`, and a short answer sentence that starts
with "Yes" or "No". A generated answer is read back by :func:`parse_answer`, which handles
negation ("there is no veil", "absent"), so a model that answers in a sentence is not punished
for its wording.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from dermino.evaluate.stats import bootstrap_ci
from dermino.results import Metric

#: criterion -> (phrase used in answers, question templates)
QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "asymmetry": ("asymmetry", ("Is the lesion asymmetric?", "Does the lesion show asymmetry?")),
    "atypical_network": ("an atypical pigment network", ("Is there an atypical pigment network?",
                                                         "Does the lesion show an atypical pigment network?")),
    "typical_network": ("a typical pigment network", ("Is there a typical pigment network?",)),
    "dots_globules": ("dots or globules", ("Are there dots or globules?", "Does the lesion show dots/globules?")),
    "streaks": ("streaks", ("Are there streaks?", "Does the lesion show streaks?")),
    "regression_areas": ("regression structures", ("Are there regression structures?",
                                                   "Does the lesion show regression areas?")),
    "blue_whitish_veil": ("a blue-whitish veil", ("Is there a blue-whitish veil?",
                                                  "Does the lesion show a blue-whitish veil?")),
    "white": ("white colour", ("Is white colour present?",)),
    "red": ("red colour", ("Is red colour present?",)),
    "light_brown": ("light brown colour", ("Is light brown colour present?",)),
    "dark_brown": ("dark brown colour", ("Is dark brown colour present?",)),
    "blue_gray": ("blue-gray colour", ("Is blue-gray colour present?",)),
    "black": ("black colour", ("Is black colour present?",)),
}

ANSWERS = ("yes", "no", "unknown")


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str  # the target sentence, e.g. "No, there is no blue-whitish veil."
    criterion: str
    truth: bool  # the criterion is present


def answer_sentence(criterion: str, present: bool) -> str:
    phrase = QUESTIONS[criterion][0]
    return f"Yes, there is {phrase}." if present else f"No, there is no {phrase}."


def make_qa(truth: set[str], seed: int = 0, criteria: Sequence[str] | None = None) -> list[QAPair]:
    """One question per criterion for an annotated image (seeded wording), with its answer."""
    rng = np.random.default_rng(seed)
    out = []
    for c in criteria or list(QUESTIONS):
        templates = QUESTIONS[c][1]
        present = c in truth
        out.append(QAPair(templates[int(rng.integers(len(templates)))], answer_sentence(c, present), c, present))
    return out


_YES = re.compile(r"^\s*(yes|yeah|yep|present|there (is|are)|it (is|does|has|shows)|the lesion (is|shows|has))\b")
_NO = re.compile(r"^\s*(no|nope|not|none|absent|there (is|are) no|it (is not|isn't|does not|doesn't|has no))\b")
_NEG_ANYWHERE = re.compile(r"\b(no|not|without|absent|lacks?|lacking|none|neither|nor|isn't|aren't|doesn't)\b")
_POS_ANYWHERE = re.compile(r"\b(present|seen|visible|shows?|has|there (is|are))\b")


def parse_answer(text: str) -> str:
    """``yes`` / ``no`` / ``unknown`` from a generated answer; negation wins over a bare mention.

    Reads the first clause: a leading yes/no decides; else a negation word ("there is no veil",
    "not present", "absent") means no; else an affirmation ("a veil is present") means yes;
    anything else (an empty or off-topic answer) is unknown and scored as wrong.
    """
    low = text.strip().lower()
    first = re.split(r"[.;!?\n]", low, maxsplit=1)[0]
    if _NO.match(first):
        return "no"
    if _YES.match(first):
        return "yes"
    if _NEG_ANYWHERE.search(first):
        return "no"
    if _POS_ANYWHERE.search(first):
        return "yes"
    return "unknown"


def balanced_accuracy(truth: np.ndarray, said: np.ndarray) -> float:
    """Mean of the yes-recall and the no-recall (an ``unknown`` answer is wrong for both);
    NaN when one class is absent."""
    truth = np.asarray(truth, bool)
    said = np.asarray(said, dtype=object)
    if truth.all() or (~truth).all():
        return float("nan")
    return float(np.mean([np.mean(said[truth] == "yes"), np.mean(said[~truth] == "no")]))


def macro_f1(truth: np.ndarray, said: np.ndarray) -> float:
    """Mean F1 of the yes and the no class (``unknown`` answers count as misses for both)."""
    truth = np.asarray(truth, bool)
    said = np.asarray(said, dtype=object)
    f1s = []
    for label, positive in (("yes", truth), ("no", ~truth)):
        predicted = said == label
        tp = float((predicted & positive).sum())
        den = float(predicted.sum() + positive.sum())
        f1s.append(2 * tp / den if den else float("nan"))
    return float(np.nanmean(f1s)) if not all(np.isnan(f1s)) else float("nan")


def mean_balanced_accuracy(truth: np.ndarray, said: np.ndarray, criteria: np.ndarray) -> float:
    """Balanced accuracy of each criterion, averaged over the criteria where both answers occur
    (rows are (image, criterion) pairs; the paired swapped-image comparison resamples them)."""
    truth, said, criteria = np.asarray(truth, bool), np.asarray(said, dtype=object), np.asarray(criteria, dtype=object)
    vals = [balanced_accuracy(truth[criteria == c], said[criteria == c]) for c in dict.fromkeys(criteria.tolist())]
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def vqa_scores(criteria: Sequence[str], truth: Sequence[bool], answers: Sequence[str], n_bootstrap: int = 1000,
               seed: int = 0) -> dict:
    """Per criterion: balanced accuracy and macro F1 with bootstrap CIs; plus their means over criteria.

    ``answers`` are raw generated texts (parsed here); rows are (image, criterion) pairs.
    """
    crit = np.asarray(criteria, dtype=object)
    t = np.asarray(truth, bool)
    said = np.asarray([parse_answer(a) for a in answers], dtype=object)
    per = {}
    for c in dict.fromkeys(criteria):
        rows = crit == c
        ba: Metric = bootstrap_ci(balanced_accuracy, t[rows], said[rows], n_resamples=n_bootstrap, seed=seed)
        f1: Metric = bootstrap_ci(macro_f1, t[rows], said[rows], n_resamples=n_bootstrap, seed=seed)
        per[c] = {"n": int(rows.sum()), "n_present": int(t[rows].sum()), "balanced_accuracy": asdict(ba),
                  "macro_f1": asdict(f1), "unknown": float(np.mean(said[rows] == "unknown"))}
    f1s = [v["macro_f1"]["value"] for v in per.values()]
    return {
        "per_criterion": per,
        "mean_balanced_accuracy": mean_balanced_accuracy(t, said, crit),
        "mean_macro_f1": float(np.nanmean(f1s)) if np.isfinite(f1s).any() else float("nan"),
        "unknown_share": float(np.mean(said == "unknown")) if len(said) else float("nan"),
        "answers_parsed": said.tolist(),
    }


def qa_pairs(truth: set[str], seed: int, row: int) -> list[QAPair]:
    """The seeded questions of one annotated image: the same for training, evaluation and every
    captioner compared (seeded by the run's seed and the image's manifest row)."""
    return make_qa(truth, seed=seed * 100_003 + row)
