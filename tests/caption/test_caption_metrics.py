"""Caption metrics on reference pairs whose scores are published or follow by hand from the definitions."""

from __future__ import annotations

import numpy as np
import pytest

from dermino.caption import metrics as M


def test_bleu1_papineni_example():
    # Papineni et al. 2002, section 2.1.1: modified unigram precision 2/7; the closest reference
    # length is 7 (= candidate length), so no brevity penalty and BLEU-1 = 2/7
    b, per = M.bleu(["the the the the the the the"], [["the cat is on the mat", "there is a cat on the mat"]])
    assert b[0] == pytest.approx(2 / 7, abs=1e-6)
    assert per[0][0] == pytest.approx(2 / 7, abs=1e-6)


def test_rouge_score_readme_example():
    # google-research/rouge README: rouge1 F = 0.7059 (P 6/8, R 6/9), rougeL F = 0.5882 (LCS 5)
    r = M.rouge_n(["The quick brown dog jumps on the log."], [["The quick brown fox jumps over the lazy dog"]])
    assert r["rouge1"][0] == pytest.approx(2 * 0.75 * (6 / 9) / (0.75 + 6 / 9), abs=1e-6)
    assert r["rougeL"][0] == pytest.approx(2 * (5 / 8) * (5 / 9) / (5 / 8 + 5 / 9), abs=1e-6)


def test_coco_rouge_l_uses_beta_1_2():
    # LCS 5 of 8 candidate / 9 reference words; F_beta with beta = 1.2 (pycocoevalcap)
    p, r, b2 = 5 / 8, 5 / 9, 1.2**2
    score, per = M.rouge_l_coco(["The quick brown dog jumps on the log."], [["The quick brown fox jumps over the lazy dog"]])
    assert score == pytest.approx((1 + b2) * p * r / (r + b2 * p), abs=1e-6)


def test_sacrebleu_readme_example():
    # sacrebleu README: BLEU = 48.53 on this system / two reference streams
    sys = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    refs = [["The dog bit the man.", "The dog had bit the man."],
            ["It was not unexpected.", "No one was surprised."],
            ["The man bit him first.", "The man had bitten the dog."]]
    score, signature = M.sacrebleu_corpus(sys, refs)
    assert score == pytest.approx(48.53, abs=0.01)
    assert "nrefs:2" in signature


def test_cider_identical_captions_score_ten():
    # CIDEr-D = 10 x mean cosine similarity of tf-idf n-gram vectors: identical captions -> 10
    cands = ["a cat sat on the mat", "a dog ran in the park", "two birds fly high"]
    score, per = M.cider(cands, [[c] for c in cands])
    assert score == pytest.approx(10.0, abs=1e-6)
    assert np.allclose(per, 10.0)
    worse, _ = M.cider(["a cat sat on the mat", "a dog ran", "two birds"], [[c] for c in cands])
    assert worse < 10.0


def test_coco_tokenize_drops_punctuation_and_case():
    assert M.coco_tokenize("A Blue-whitish veil; NO streaks.") == "a blue whitish veil no streaks"


@pytest.mark.slow
@pytest.mark.skipif(not M.java_available(), reason="METEOR needs a Java runtime")
def test_meteor_identical_is_one_and_paraphrase_lower():
    score, per = M.meteor(["the cat sat on the mat", "a lesion with streaks"],
                          [["the cat sat on the mat"], ["a dog in the park"]])
    assert per[0] == pytest.approx(1.0, abs=1e-6)
    assert per[1] < 0.3


# dermatology phrases the Python approximation splits and the COCO pipeline keeps whole
DERM_CANDIDATES = ["blue-whitish veil and dots/globules; it's asymmetric",
                   "a pigment network with blue-whitish veil",
                   "it's a regular dots/globules pattern",
                   "no streaks, no blue-whitish veil",
                   "melanocytic nevus with a pigment network"]
DERM_REFERENCES = [["blue-whitish veil and irregular dots/globules; it's asymmetric"],
                   ["an atypical pigment network with a blue-whitish veil"],
                   ["it's a regular pattern of dots/globules"],
                   ["no streaks and no blue-whitish veil"],
                   ["melanocytic nevus with a typical pigment network"]]


@pytest.mark.skipif(not M.java_available(), reason="the COCO tokenizer (PTBTokenizer) needs a Java runtime")
def test_scores_equal_the_standard_coco_pipeline_on_dermatology_phrases():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # the pipeline as pycocoevalcap's COCOEvalCap runs it: PTBTokenizer, then each scorer
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(DERM_REFERENCES)})
    res = tok.tokenize({i: [{"caption": c}] for i, c in enumerate(DERM_CANDIDATES)})
    assert "blue-whitish" in res[0][0].split() and "dots/globules" in res[0][0].split() and "'s" in res[0][0].split()
    s = M.caption_scores(DERM_CANDIDATES, DERM_REFERENCES, use_meteor=False)
    assert s.notes["tokenizer"].startswith("ptb")
    assert s.corpus["bleu4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3], abs=1e-12)
    assert s.corpus["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)
    assert s.corpus["rougeL_coco"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    # the Python fallback differs on exactly these phrases, and says so
    fb = M.caption_scores(DERM_CANDIDATES, DERM_REFERENCES, use_meteor=False, tokenizer="python")
    assert fb.notes["tokenizer"].startswith("python fallback") and fb.corpus["bleu4"] != s.corpus["bleu4"]


def test_python_fallback_is_used_and_recorded_without_java(monkeypatch):
    monkeypatch.setattr(M, "java_available", lambda: False)
    s = M.caption_scores(["a melanoma"], [["a melanoma with streaks"]])
    assert s.notes["tokenizer"].startswith("python fallback") and s.notes["meteor"].startswith("skipped")
    with pytest.raises(RuntimeError, match="Java"):
        M.caption_scores(["a"], [["a"]], tokenizer="ptb")


def test_caption_scores_notes_skipped_meteor():
    s = M.caption_scores(["a melanoma"], [["a melanoma with streaks"]], use_meteor=False)
    assert "meteor" not in s.corpus and s.notes["meteor"].startswith("skipped")
    assert {"bleu1", "bleu4", "cider", "rougeL_coco", "rouge1", "rouge2", "rougeL", "sacrebleu"} <= set(s.corpus)
    with pytest.raises(ValueError, match="reference"):
        M.caption_scores(["a"], [["a"], ["b"]], use_meteor=False)


def test_score_captions_tokenizes_once(monkeypatch):
    """Every metric and every bootstrap resample reuse one tokenization (PTB is a Java process)."""
    from dermino.caption.data import CaptionExample
    from dermino.caption.evaluate import score_captions

    calls = []
    real = M.coco_inputs
    monkeypatch.setattr(M, "coco_inputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    examples = [CaptionExample(image=f"i{i}.jpg", caption=r[0], labels=("melanoma",), row=i, source="ph2")
                for i, r in enumerate(DERM_REFERENCES)]
    metrics, extra = score_captions(DERM_CANDIDATES, examples, [None] * len(examples), n_bootstrap=20,
                                    use_meteor=False)
    assert len(calls) == 1
    assert metrics["bleu4"].value == pytest.approx(M.bleu(DERM_CANDIDATES, DERM_REFERENCES)[0][3])
