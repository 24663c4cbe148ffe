"""Caption metrics from maintained implementations: pycocoevalcap, rouge-score, sacrebleu.

Why these three: pycocoevalcap is what captioning papers (and the DermINO paper's SkinCAP
table) report (BLEU-n, METEOR, ROUGE-L, CIDEr-D); rouge-score is Google's ROUGE-1/2/L;
sacrebleu is the reproducible corpus BLEU with a signature. Nothing here re-implements a metric.

The COCO numbers are only comparable with published tables after the COCO pipeline's own
tokenizer, pycocoevalcap's ``PTBTokenizer`` (Stanford CoreNLP's PTB tokenizer, Java): it keeps
"blue-whitish" and "dots/globules" whole and splits "it's" into "it 's". It is used whenever a
Java runtime exists (the default, ``tokenizer="auto"``). Without Java a Python approximation
(:func:`coco_tokenize`: lower case, punctuation removed) is the labelled fallback: it splits
hyphens, slashes and contractions, which inflates BLEU and CIDEr on dermatology captions, and
the results record which tokenizer ran. METEOR 1.5 is Java too: without Java it is skipped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

# the punctuation PTBTokenizer removes in the COCO caption evaluation
_PUNCT = re.compile(r"[\"'`.,;:!?()\[\]{}\-_/\\|@#$%^&*+=<>~]")


def coco_tokenize(text: str) -> str:
    """COCO-style normalisation: lower case, punctuation removed, single spaces."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def java_available() -> bool:
    return shutil.which("java") is not None


Tokenizer = Literal["auto", "ptb", "python"]
PTB = "ptb: pycocoevalcap PTBTokenizer (Java), as in the COCO caption evaluation"
PYTHON_FALLBACK = ("python fallback (no Java runtime): lower case, punctuation removed; splits hyphens, "
                   "slashes and contractions, so BLEU/CIDEr are not comparable with published tables")


def resolve_tokenizer(tokenizer: Tokenizer = "auto") -> Literal["ptb", "python"]:
    """``auto``: the standard PTB tokenizer when Java is installed, else the Python fallback."""
    if tokenizer == "auto":
        return "ptb" if java_available() else "python"
    if tokenizer == "ptb" and not java_available():
        raise RuntimeError("tokenizer='ptb' needs a Java runtime (apt-get install default-jre-headless)")
    return tokenizer


def _ptb_tokenize(texts: dict[int, list[str]]) -> dict[int, list[str]]:
    """One call of pycocoevalcap's PTBTokenizer (one Java process) for every caption."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a token count
        return PTBTokenizer().tokenize({i: [{"caption": t} for t in ts] for i, ts in texts.items()})


def coco_inputs(candidates: Sequence[str], references: Sequence[Sequence[str]],
                tokenizer: Tokenizer = "auto") -> tuple[dict, dict, str]:
    """(references, candidates) tokenized as pycocoevalcap's scorers take them, and the tokenizer used."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    for i, refs in enumerate(references):
        if not refs:
            raise ValueError(f"caption {i} has no reference")
    kind = resolve_tokenizer(tokenizer)
    raw_res = {i: [c] for i, c in enumerate(candidates)}
    raw_gts = {i: list(refs) for i, refs in enumerate(references)}
    if kind == "ptb":
        n = len(candidates)
        both = _ptb_tokenize({**raw_gts, **{n + i: v for i, v in raw_res.items()}})
        return {i: both[i] for i in raw_gts}, {i: both[n + i] for i in raw_res}, kind
    return ({i: [coco_tokenize(r) for r in v] for i, v in raw_gts.items()},
            {i: [coco_tokenize(c) for c in v] for i, v in raw_res.items()}, kind)


def bleu_tokenized(gts: dict, res: dict) -> tuple[list[float], list[np.ndarray]]:
    """BLEU-1..4 of captions already tokenized by :func:`coco_inputs` (a bootstrap tokenizes once)."""
    from pycocoevalcap.bleu.bleu import Bleu

    score, per = Bleu(4).compute_score(gts, res, verbose=0)
    return [float(s) for s in score], [np.asarray(p, dtype=float) for p in per]


def _cider(gts: dict, res: dict) -> tuple[float, np.ndarray]:
    from pycocoevalcap.cider.cider import Cider

    score, per = Cider().compute_score(gts, res)
    return float(score), np.asarray(per, dtype=float)


def _rouge(gts: dict, res: dict) -> tuple[float, np.ndarray]:
    from pycocoevalcap.rouge.rouge import Rouge

    score, per = Rouge().compute_score(gts, res)
    return float(score), np.asarray(per, dtype=float)


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]],
         tokenizer: Tokenizer = "auto") -> tuple[list[float], list[np.ndarray]]:
    """pycocoevalcap corpus BLEU-1..4 and the per-caption BLEU-1..4."""
    gts, res, _ = coco_inputs(candidates, references, tokenizer)
    return bleu_tokenized(gts, res)


def cider(candidates: Sequence[str], references: Sequence[Sequence[str]],
          tokenizer: Tokenizer = "auto") -> tuple[float, np.ndarray]:
    """pycocoevalcap CIDEr-D (document frequencies from this corpus' references, as in COCO)."""
    gts, res, _ = coco_inputs(candidates, references, tokenizer)
    return _cider(gts, res)


def rouge_l_coco(candidates: Sequence[str], references: Sequence[Sequence[str]],
                 tokenizer: Tokenizer = "auto") -> tuple[float, np.ndarray]:
    """pycocoevalcap ROUGE-L (LCS F-measure with beta 1.2, max over references)."""
    gts, res, _ = coco_inputs(candidates, references, tokenizer)
    return _rouge(gts, res)


def _meteor(gts: dict, res: dict) -> tuple[float, np.ndarray]:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, per = scorer.compute_score(gts, res)
    finally:
        scorer.close() if hasattr(scorer, "close") else None
    return float(score), np.asarray(per, dtype=float)


def meteor(candidates: Sequence[str], references: Sequence[Sequence[str]],
           tokenizer: Tokenizer = "auto") -> tuple[float, np.ndarray] | None:
    """pycocoevalcap METEOR 1.5 (Java); None when no Java runtime is installed."""
    if not java_available():
        log.warning("METEOR skipped: no Java runtime (install a JRE, e.g. apt-get install default-jre-headless)")
        return None
    gts, res, _ = coco_inputs(candidates, references, tokenizer)
    return _meteor(gts, res)


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
    #: (references, candidates) as tokenized once for every metric: a bootstrap of corpus BLEU
    #: resamples these instead of running the tokenizer (a Java process for PTB) again
    tokenized: tuple[dict, dict] = field(default_factory=lambda: ({}, {}))


def caption_scores(
    candidates: Sequence[str], references: Sequence[Sequence[str]], use_meteor: bool = True,
    tokenizer: Tokenizer = "auto",
) -> CaptionScores:
    """Every metric on one corpus, tokenized once; ``notes["tokenizer"]`` says which tokenizer ran.
    METEOR is skipped (and noted) without Java or when ``use_meteor`` is off."""
    corpus: dict[str, float] = {}
    per: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    gts, res, kind = coco_inputs(candidates, references, tokenizer)
    notes["tokenizer"] = PTB if kind == "ptb" else PYTHON_FALLBACK
    if kind == "python":
        log.warning("caption metrics: %s", PYTHON_FALLBACK)
    b, bper = bleu_tokenized(gts, res)
    for n in (1, 2, 4):
        corpus[f"bleu{n}"] = b[n - 1]
        per[f"bleu{n}"] = bper[n - 1]
    corpus["cider"], per["cider"] = _cider(gts, res)
    corpus["rougeL_coco"], per["rougeL_coco"] = _rouge(gts, res)
    for k, v in rouge_n(candidates, references).items():
        corpus[k], per[k] = float(v.mean()), v
    corpus["sacrebleu"], notes["sacrebleu"] = sacrebleu_corpus(candidates, references)
    if use_meteor and java_available():
        corpus["meteor"], per["meteor"] = _meteor(gts, res)
    else:
        notes["meteor"] = "skipped: " + ("no Java runtime found" if use_meteor else "disabled")
    return CaptionScores(corpus, per, notes, (gts, res))
