"""Scoring captions into a results file, and the report section that reads it (no language model needed)."""

from __future__ import annotations

import pytest

from dermino.caption.clinical import true_criteria_ph2
from dermino.caption.data import caption_examples, make_captions
from dermino.caption.evaluate import evaluation_result
from dermino.cli import main
from dermino.data.adapters import ph2
from dermino.data.sample import sample_root
from dermino.results import read_result


@pytest.fixture(scope="module")
def ph2_rows():
    df = make_captions(ph2.build_manifest(sample_root() / "ph2"))[0]
    examples, _ = caption_examples(df)
    rows = df.to_dict("records")
    picked = examples[::5]  # all three diagnoses
    return picked, [true_criteria_ph2(rows[e.row]) for e in picked]


def test_perfect_captions_score_perfectly_and_report(ph2_rows, tmp_path):
    examples, truth = ph2_rows
    refs = [e.caption for e in examples]
    result, pred = evaluation_result("reference", "ph2-sample", refs, examples, truth, tmp_path,
                                     n_bootstrap=50, use_meteor=False)
    m = result.metrics
    assert m["bleu4"].value == pytest.approx(1.0, abs=1e-6) and m["rougeL"].value == pytest.approx(1.0)
    assert m["diagnosis_accuracy"].value == 1.0 and m["diagnosis_accuracy"].ci_low == 1.0
    assert m["criteria_precision_macro"].value == 1.0 and m["criteria_recall_macro"].value == 1.0
    assert result.extra["meteor_skipped"] and "meteor" not in m
    again = read_result(next(tmp_path.glob("*__captioning.json")))
    assert again.metrics["cider"].value == pytest.approx(m["cider"].value) and pred.is_file()

    # a captioner that always writes the same sentence: worse on every metric, CIs below the perfect ones
    const = ["Dermoscopy of a common nevus."] * len(examples)
    worse, _ = evaluation_result("constant", "ph2-sample", const, examples, truth, tmp_path, n_bootstrap=50,
                                 use_meteor=False)
    for name in ("bleu1", "cider", "rougeL", "diagnosis_accuracy"):
        assert worse.metrics[name].ci_high < m[name].value, name
    share = sum("common nevus" in e.labels for e in examples) / len(examples)
    assert worse.metrics["diagnosis_accuracy"].value == pytest.approx(share)

    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Captioning" in html and "criteria_recall_macro" in html
    assert html.count("data:image/jpeg;base64") >= 12 and "Dermoscopy of a common nevus." in html
