"""Criteria question answering: seeded questions from PH2 annotations, answer parsing, closed-form scores."""

from __future__ import annotations

import numpy as np
import pytest

from dermino.caption.vqa import (
    QUESTIONS,
    answer_sentence,
    balanced_accuracy,
    macro_f1,
    make_qa,
    mean_balanced_accuracy,
    parse_answer,
    vqa_scores,
)


@pytest.mark.parametrize("text, expected", [
    ("Yes, there is a blue-whitish veil.", "yes"),
    ("yes", "yes"),
    ("No, there is no blue-whitish veil.", "no"),
    ("There is no blue-whitish veil.", "no"),
    ("There are streaks at the periphery.", "yes"),
    ("A blue-whitish veil is present.", "yes"),
    ("A blue-whitish veil is not present.", "no"),
    ("Streaks are absent.", "no"),
    ("The lesion lacks dots or globules.", "no"),
    ("It doesn't show regression structures", "no"),
    ("Not seen.", "no"),
    ("", "unknown"),
    ("melanoma melanoma", "unknown"),
    # only the first clause counts: a later negation does not flip a leading yes
    ("Yes, there are streaks. No regression.", "yes"),
])
def test_parse_answer_handles_negation(text, expected):
    assert parse_answer(text) == expected


def test_every_generated_answer_parses_back_to_its_truth():
    for c in QUESTIONS:
        for present in (True, False):
            assert parse_answer(answer_sentence(c, present)) == ("yes" if present else "no"), c


def test_questions_are_seeded_and_cover_every_criterion():
    truth = {"streaks", "blue_whitish_veil", "dark_brown"}
    a, b = make_qa(truth, seed=1), make_qa(truth, seed=1)
    assert a == b and [q.criterion for q in a] == list(QUESTIONS)
    assert {q.criterion for q in a if q.truth} == truth
    assert any(make_qa(truth, seed=s) != a for s in range(2, 8))  # the wording varies with the seed
    assert all(q.question in QUESTIONS[q.criterion][1] for q in a)


def test_balanced_accuracy_and_macro_f1_hand_worked():
    truth = np.array([True, True, False, False, False, False])
    said = np.array(["yes", "unknown", "no", "no", "no", "yes"], dtype=object)
    # yes-recall 1/2, no-recall 3/4 -> 0.625
    assert balanced_accuracy(truth, said) == pytest.approx(0.625)
    # yes: tp 1, predicted 2, positive 2 -> 0.5; no: tp 3, predicted 3, positive 4 -> 6/7
    assert macro_f1(truth, said) == pytest.approx((0.5 + 6 / 7) / 2)
    assert np.isnan(balanced_accuracy(np.ones(3, bool), np.array(["yes"] * 3, dtype=object)))
    # "no" to everything: high plain accuracy on a rare criterion, 0.5 balanced accuracy
    rare = np.array([True] + [False] * 9)
    assert balanced_accuracy(rare, np.array(["no"] * 10, dtype=object)) == pytest.approx(0.5)


def test_mean_balanced_accuracy_skips_criteria_with_one_answer_class():
    truth = np.array([True, False, True, False, True, True])
    said = np.array(["yes", "yes", "no", "no", "yes", "no"], dtype=object)
    crit = np.array(["veil", "veil", "streaks", "streaks", "dots", "dots"], dtype=object)
    # veil: yes-recall 1, no-recall 0 -> 0.5; streaks: 0 and 1 -> 0.5; dots has no "absent" row: left out
    assert mean_balanced_accuracy(truth, said, crit) == pytest.approx(0.5)
    said[1] = "no"  # veil now perfect -> (1 + 0.5) / 2
    assert mean_balanced_accuracy(truth, said, crit) == pytest.approx(0.75)
    assert np.isnan(mean_balanced_accuracy(truth[4:], said[4:], crit[4:]))


def test_vqa_scores_per_criterion_with_cis():
    rng = np.random.default_rng(0)
    crit, truth, answers = [], [], []
    for c in ("streaks", "blue_whitish_veil"):
        t = rng.random(60) < 0.4
        crit += [c] * 60
        truth += t.tolist()
        answers += [answer_sentence(c, bool(x)) if c == "streaks" else "No." for x in t]
    s = vqa_scores(crit, truth, answers, n_bootstrap=200)
    st, veil = s["per_criterion"]["streaks"], s["per_criterion"]["blue_whitish_veil"]
    assert st["balanced_accuracy"]["value"] == 1.0 and st["macro_f1"]["value"] == 1.0
    assert veil["balanced_accuracy"]["value"] == 0.5
    lo, hi = veil["macro_f1"]["ci_low"], veil["macro_f1"]["ci_high"]
    assert lo <= veil["macro_f1"]["value"] <= hi
    assert s["mean_balanced_accuracy"] == pytest.approx(0.75) and s["unknown_share"] == 0.0


@pytest.mark.slow
def test_vqa_training_evaluation_and_ask(smollm2, tmp_path, capsys):
    """A short run trained on captions + criteria questions answers in the trained form; the evaluation
    scores the answers per criterion with the swapped-image control; ``dermino caption ask`` answers."""
    import copy

    import torch

    from dermino.caption.config import CaptionConfig
    from dermino.caption.data import make_captions
    from dermino.caption.evaluate import evaluate_run
    from dermino.caption.model import CaptionerSpec
    from dermino.caption.train import train_captioner
    from dermino.cli import main
    from dermino.data.adapters import ph2
    from dermino.data.manifest import write_manifest
    from dermino.data.sample import sample_root
    from dermino.data.splits import assign_splits
    from dermino.models import create

    tiny = {"depth": 1, "embed_dim": 64, "num_heads": 2, "img_size": 56}
    df = make_captions(ph2.build_manifest(sample_root() / "ph2"), short=True)[0]
    df = assign_splits(df, test_fraction=0.5, val_fraction=0.0, seed=0)
    manifest = write_manifest(df, tmp_path / "ph2.csv", root=sample_root() / "ph2")
    lm, tok = smollm2
    spec = CaptionerSpec(encoder="dermino_vit_tiny_14", encoder_overrides=tiny, patch_grid=1, image_tokens="cls",
                         prompt="Caption:", lora_r=4)
    cfg = CaptionConfig(manifests=[str(manifest)], model=spec, image_size=56, out=str(tmp_path / "run"),
                        max_steps=12, align_steps=2, batch_size=4, max_test=2, projector_lr=2e-3, lora_lr=3e-3,
                        max_caption_tokens=16, max_new_tokens=10, bootstrap=50, meteor=False, progress=False,
                        device="cpu", vqa_training=True, sampling="balanced")
    torch.manual_seed(0)
    summary = train_captioner(cfg, lm=copy.deepcopy(lm), tokenizer=tok, encoder=create("dermino_vit_tiny_14", **tiny))
    assert summary.steps == 14 and summary.last_loss < summary.first_loss
    result = evaluate_run(summary.run, lm=copy.deepcopy(lm), tokenizer=tok)
    v = result.extra["vqa"]
    assert v["n_images"] == 2 and v["n_questions"] == 2 * len(QUESTIONS)
    per = v["true_image"]["per_criterion"]
    assert set(per) == set(QUESTIONS) and all(c["n"] == 2 for c in per.values())
    # trained on "Yes, there is ..." / "No, there is no ..." answers: they parse
    assert v["true_image"]["unknown_share"] < 0.5, v["examples"][:5]
    if "swapped_image" in v:  # both PH2 diagnoses among the test images: the control ran
        assert "paired_mean_balanced_accuracy" in v
    from dermino.report.captioning import vqa_table

    assert not vqa_table([result]).empty

    image = sorted((sample_root() / "ph2" / "images").glob("*.jpg"))[0]
    assert main(["caption", "ask", str(image), "Is there a blue-whitish veil?", "--run", str(summary.run),
                 "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["question"] == "Is there a blue-whitish veil?" and out["parsed"] in ("yes", "no", "unknown")


class _ReadsTheImage:
    """A stand-in captioner whose answer comes from its image features only: feature j > 0 means
    criterion j of :data:`QUESTIONS` is present. Questions are recognised by their template."""

    uses_image = True
    _criterion = {t: c for c, (_, templates) in QUESTIONS.items() for t in templates}

    def generate(self, feats, batch, max_new_tokens, prompts):
        names = list(QUESTIONS)
        return [answer_sentence(self._criterion[q], bool(f[names.index(self._criterion[q])] > 0))
                for f, q in zip(feats, prompts, strict=True)]


def test_evaluate_vqa_scores_true_and_swapped_images_as_a_paired_difference():
    """End to end over the evaluation's own code: an answerer that reads its features is perfect on
    the true images; fed the partner's features it is not, and the paired difference says so."""
    import torch

    from dermino.caption.data import CaptionExample
    from dermino.caption.evaluate import evaluate_vqa

    rng = np.random.default_rng(0)
    names = list(QUESTIONS)
    truth = [set(np.asarray(names)[rng.random(len(names)) < 0.5].tolist()) for _ in range(12)]
    truth.append(None)  # an image without annotations (HAM10000) is not asked
    feats = torch.tensor([[1.0 if t and c in t else -1.0 for c in names] for t in truth])
    examples = [CaptionExample(image=f"img{i}.jpg", caption="", labels=("melanoma",), row=i) for i in range(13)]
    partners = np.append((np.arange(12) + 1) % 12, 0)  # image i answers from image i+1's features
    v = evaluate_vqa(_ReadsTheImage(), feats, examples, truth, partners, n_bootstrap=200, seed=0, batch_size=5,
                     progress=False)
    assert v["n_images"] == 12 and v["n_questions"] == 12 * len(QUESTIONS)
    assert v["true_image"]["mean_balanced_accuracy"] == pytest.approx(1.0)
    assert v["true_image"]["unknown_share"] == 0.0
    swapped = v["swapped_image"]["mean_balanced_accuracy"]
    assert swapped < 0.8
    p = v["paired_mean_balanced_accuracy"]
    assert p["diff"] == pytest.approx(1.0 - swapped) and p["ci_low"] > 0 and p["p_value"] < 0.05
