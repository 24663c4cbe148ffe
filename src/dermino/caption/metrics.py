"""Caption metrics from maintained implementations: pycocoevalcap, rouge-score, sacrebleu.

Why these three: pycocoevalcap is what captioning papers (and the DermINO paper's SkinCAP
table) report (BLEU-n, METEOR, ROUGE-L, CIDEr-D); rouge-score is Google's ROUGE-1/2/L;
sacrebleu is the reproducible corpus BLEU with a signature. Nothing here re-implements a
metric: only the text normalisation (COCO's: lower case, punctuation dropped) is done in
Python so that BLEU and CIDEr do not need Java. METEOR 1.5 *is* Java (pycocoevalcap ships the
jar): without a Java runtime it is skipped, and the results say so.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

# the punctuation PTBTokenizer removes in the COCO caption evaluation
_PUNCT = re.compile(r"[\"'`.,;:!?()\[\]{}\-_/\\|@#$%^&*+=<>~]")


def coco_tokenize(text: str) -> str:
    """COCO-style normalisation: lower case, punctuation removed, single spaces."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def java_available() -> bool:
    return shutil.which("java") is not None


def _coco_inputs(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[dict, dict]:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    res = {i: [coco_tokenize(c)] for i, c in enumerate(candidates)}
    gts = {i: [coco_tokenize(r) for r in refs] for i, refs in enumerate(references)}
    for i, refs in gts.items():
        if not refs:
            raise ValueError(f"caption {i} has no reference")
    return gts, res


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[list[float], list[np.ndarray]]:
    """pycocoevalcap corpus BLEU-1..4 and the per-caption BLEU-1..4."""
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = _coco_inputs(candidates, references)
    score, per = Bleu(4).compute_score(gts, res, verbose=0)
    return [float(s) for s in score], [np.asarray(p, dtype=float) for p in per]


def cider(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """pycocoevalcap CIDEr-D (document frequencies from this corpus' references, as in COCO)."""
    from pycocoevalcap.cider.cider import Cider

    gts, res = _coco_inputs(candidates, references)
    score, per = Cider().compute_score(gts, res)
    return float(score), np.asarray(per, dtype=float)


def rouge_l_coco(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """pycocoevalcap ROUGE-L (LCS F-measure with beta 1.2, max over references)."""
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _coco_inputs(candidates, references)
    score, per = Rouge().compute_score(gts, res)
    return float(score), np.asarray(per, dtype=float)


def meteor(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray] | None:
    """pycocoevalcap METEOR 1.5 (Java); None when no Java runtime is installed."""
    if not java_available():
        log.warning("METEOR skipped: no Java runtime (install a JRE, e.g. apt-get install default-jre-headless)")
        return None
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = _coco_inputs(candidates, references)
    scorer = Meteor()
    try:
        score, per = scorer.compute_score(gts, res)
    finally:
        scorer.close() if hasattr(scorer, "close") else None
    return float(score), np.asarray(per, dtype=float)


def rouge_n(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """rouge-score ROUGE-1/2/L F1 per caption (stemmed; best over references)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    out = {k: np.zeros(len(candidates)) for k in ("rouge1", "rouge2", "rougeL")}
    for i, (c, refs) in enumerate(zip(candidates, references, strict=True)):
        scores = scorer.score_multi(list(refs), c)
        for k in out:
            out[k][i] = scores[k].fmeasure
    return out


def sacrebleu_corpus(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, str]:
    """sacrebleu corpus BLEU (0-100) and its signature; ragged reference lists are padded."""
    import sacrebleu

    n_refs = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(n_refs)]
    metric = sacrebleu.metrics.BLEU()
    result = metric.corpus_score(list(candidates), streams)
    return float(result.score), str(metric.get_signature())


@dataclass
class CaptionScores:
    """Corpus values and, where the metric is a mean of per-caption scores, those scores."""

    corpus: dict[str, float]
    per_caption: dict[str, np.ndarray]
    notes: dict[str, str] = field(default_factory=dict)


def caption_scores(
    candidates: Sequence[str], references: Sequence[Sequence[str]], use_meteor: bool = True
) -> CaptionScores:
    """Every metric on one corpus; METEOR skipped (and noted) without Java or when ``use_meteor`` is off."""
    corpus: dict[str, float] = {}
    per: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    b, bper = bleu(candidates, references)
    for n in (1, 2, 4):
        corpus[f"bleu{n}"] = b[n - 1]
        per[f"bleu{n}"] = bper[n - 1]
    corpus["cider"], per["cider"] = cider(candidates, references)
    corpus["rougeL_coco"], per["rougeL_coco"] = rouge_l_coco(candidates, references)
    for k, v in rouge_n(candidates, references).items():
        corpus[k], per[k] = float(v.mean()), v
    corpus["sacrebleu"], notes["sacrebleu"] = sacrebleu_corpus(candidates, references)
    met = meteor(candidates, references) if use_meteor else None
    if met is None:
        notes["meteor"] = "skipped: " + ("no Java runtime found" if use_meteor else "disabled")
    else:
        corpus["meteor"], per["meteor"] = met
    return CaptionScores(corpus, per, notes)
