"""Reader-study analysis: Fleiss' kappa golden value, known simulated effects recovered, sampling, report."""

from __future__ import annotations

import numpy as np
import pytest

from dermino.report.study import study_sections
from dermino.results import read_result
from dermino.study.analysis import analyse, fleiss_kappa, simulate_answers, write_analysis
from dermino.study.sampling import stratified_sample

LABELS = ["basal cell carcinoma", "benign keratosis", "melanocytic nevus", "melanoma", "vascular lesion"]


def test_fleiss_kappa_golden_value():
    # Fleiss (1971) worked example as tabulated on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same"):
        fleiss_kappa(np.array([[2, 0], [1, 2]]))


def test_known_effect_is_recovered():
    # 10 readers at 60 % unaided; in round 2 each follows a 90 %-accurate AI half the time:
    # expected change 0.5 * (0.9 - 0.6) = +0.15
    df = simulate_answers(10, 200, LABELS, 0.6, 0.5, 0.9, seed=3,
                          experience=["senior"] * 5 + ["junior"] * 5)
    res = analyse(df, n_boot=200)
    m = res.metrics
    assert m["accuracy_round1"].value == pytest.approx(0.6, abs=0.03)
    assert m["accuracy_change"].value == pytest.approx(0.15, abs=0.03)
    assert m["accuracy_change"].ci_low < 0.15 < m["accuracy_change"].ci_high
    assert m["p_ttest"].value < 1e-3 and m["p_wilcoxon"].value < 0.01  # 10/10 readers improved: exact p = 2/1024
    assert m["ai_accuracy"].value == pytest.approx(0.9)
    # switched to a right AI: follow + (1 - follow) * acc = 0.8; to a wrong AI: follow + (1-follow)*(1-acc)/4 = 0.55
    assert m["switch_to_ai_when_right"].value == pytest.approx(0.8, abs=0.05)
    assert m["switch_to_ai_when_wrong"].value == pytest.approx(0.55, abs=0.08)
    assert m["fleiss_kappa_round2"].value > m["fleiss_kappa_round1"].value  # shared AI answers raise agreement
    assert set(res.groups["experience"]) == {"junior", "senior"} and (res.groups["readers"] == 5).all()


def test_no_effect_is_not_significant():
    df = simulate_answers(10, 120, LABELS, [0.5, 0.55, 0.6, 0.65, 0.7] * 2, 0.0, 0.9, seed=5)
    res = analyse(df, n_boot=200)
    assert abs(res.metrics["accuracy_change"].value) < 0.04
    assert res.metrics["p_ttest"].value > 0.05 and res.metrics["p_wilcoxon"].value > 0.05


def test_incomplete_readers_and_bad_tables():
    df = simulate_answers(3, 20, LABELS, 0.7, 0.3, 0.8, seed=0)
    partial = df[~((df["reader"] == "reader03") & (df["round"] == 2))]  # reader 3 still in round 1
    res = analyse(partial, n_boot=50)
    assert list(res.per_reader["reader"]) == ["reader01", "reader02"]
    with pytest.raises(ValueError, match="both rounds"):
        analyse(df[df["round"] == 1])
    with pytest.raises(KeyError, match="ai_top1"):
        analyse(df.drop(columns="ai_top1"))


def test_results_file_and_report_section(tmp_path):
    df = simulate_answers(4, 30, LABELS, 0.6, 0.5, 0.9, seed=1)
    path = write_analysis(analyse(df, n_boot=50), "sim", tmp_path)
    result = read_result(path)
    assert result.task == "reader-study" and result.dataset == "sim"
    assert len(result.extra["per_reader"]) == 4 and all((tmp_path / p).is_file() for p in result.extra["plots"])
    (section,) = study_sections([result], tmp_path)
    titles = [t for t, _ in section.tables]
    assert "Paired tests" in titles and len(section.figures) == 2
    tests = dict(section.tables)["Paired tests"]
    assert set(tests["test"]) == {"t_test", "wilcoxon"}


def test_stratified_sample_is_proportional_and_seeded():
    labels = ["nevus"] * 60 + ["melanoma"] * 30 + ["bcc"] * 9 + ["df"] * 1
    picked = stratified_sample(labels, 20, seed=1)
    counts = {c: sum(labels[i] == c for i in picked) for c in set(labels)}
    assert len(set(picked)) == 20 and counts["df"] == 1  # every diagnosis present
    assert counts["nevus"] in (11, 12) and counts["melanoma"] in (5, 6)
    assert picked == stratified_sample(labels, 20, seed=1) and picked != stratified_sample(labels, 20, seed=2)
    with pytest.raises(ValueError, match="only 100"):
        stratified_sample(labels, 101)
