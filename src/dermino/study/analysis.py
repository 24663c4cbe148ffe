"""``dermino study analyse``: did the AI help, whom, and how did readers use it?

Reads the answers table only (``StudyStore.answers_frame`` or the exported CSV), so a study
exported from one site can be re-analysed anywhere. Readers are the unit of the paired tests
(as in reader studies: a reader's round-1 and round-2 accuracy over the same cases); the
per-reader numbers are in the results file so any other test can be run on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermino.evaluate.metrics import accuracy, balanced_accuracy
from dermino.evaluate.stats import bootstrap_ci, paired_ttest
from dermino.results import Metric, Result, write_result

TASK = "reader-study"


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an (items, categories) table of how many raters chose each category.

    Every item must have the same number of raters (>= 2). 1 = perfect agreement, 0 = chance.
    """
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(1)
    if counts.ndim != 2 or len(counts) == 0 or not np.allclose(n, n[0]) or n[0] < 2:
        raise ValueError("Fleiss' kappa needs an (items, categories) table with the same >= 2 raters per item")
    r = n[0]
    p_item = ((counts * (counts - 1)).sum(1)) / (r * (r - 1))
    p_cat = counts.sum(0) / counts.sum()
    pe = float((p_cat**2).sum())
    if math.isclose(pe, 1.0):
        return 1.0 if np.allclose(p_item, 1.0) else math.nan
    return float((p_item.mean() - pe) / (1 - pe))


def _kappa(df: pd.DataFrame, labels: list[str]) -> tuple[float, int]:
    """Fleiss' kappa over the cases every reader answered in this round."""
    readers = df["reader"].nunique()
    table = pd.crosstab(df["case_id"], df["diagnosis"]).reindex(columns=labels, fill_value=0)
    table = table[table.sum(1) == readers]
    if readers < 2 or len(table) == 0:
        return math.nan, 0
    return fleiss_kappa(table.to_numpy()), len(table)


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from scipy import stats as sps

    d = a - b
    if len(d) < 2 or np.allclose(d, 0):
        return {"statistic": math.nan, "p_value": 1.0, "n": len(d)}
    res = sps.wilcoxon(a, b, zero_method="wilcox")
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "n": len(d)}


def _ttest(a: np.ndarray, b: np.ndarray, label: str) -> dict[str, float]:
    if len(a) < 2:
        return {"statistic": math.nan, "p_value": math.nan, "n": len(a), "mean_diff": math.nan}
    t = paired_ttest(a, b, label)
    return {"statistic": t.statistic, "p_value": t.p_value, "n": t.n, "mean_diff": t.mean_diff}


@dataclass
class StudyAnalysis:
    per_reader: pd.DataFrame  # reader, experience, acc_1, acc_2, bacc_1, bacc_2, change, n_cases
    groups: pd.DataFrame  # experience group rows
    tests: dict[str, Any]
    switching: dict[str, Any]
    kappa: dict[str, Any]
    metrics: dict[str, Metric]


def analyse(answers: pd.DataFrame, labels: list[str] | None = None, n_boot: int = 1000, seed: int = 0
            ) -> StudyAnalysis:
    """Everything the issue asks for, from one answers table (see ``StudyStore.answers_frame``).

    Readers count when they finished both rounds on the same cases (paired data).
    """
    need = {"reader", "case_id", "round", "diagnosis", "truth", "ai_top1"}
    if missing := need - set(answers.columns):
        raise KeyError(f"answers table lacks columns {sorted(missing)}")
    df = answers.copy()
    if "experience" not in df:
        df["experience"] = ""
    df["experience"] = df["experience"].fillna("").astype(str).replace("", "unspecified")
    labels = sorted(set(labels or []) | set(df["truth"]) | set(df["diagnosis"]))
    code = {lab: i for i, lab in enumerate(labels)}
    wide = df.pivot_table(index=["reader", "case_id"], columns="round", values="diagnosis", aggfunc="first")
    wide = wide.dropna(subset=[c for c in (1, 2) if c in wide.columns])
    if 1 not in wide.columns or 2 not in wide.columns or wide.empty:
        raise ValueError("no reader has answered a case in both rounds yet: nothing to compare")
    info = df.drop_duplicates(["reader", "case_id"]).set_index(["reader", "case_id"])
    wide = wide.join(info[["truth", "ai_top1", "experience"]]).reset_index()
    rows = []
    for reader, g in wide.groupby("reader", sort=True):
        y = g["truth"].map(code).to_numpy()
        p1, p2 = g[1].map(code).to_numpy(), g[2].map(code).to_numpy()
        rows.append({"reader": reader, "experience": g["experience"].iloc[0], "n_cases": len(g),
                     "acc_1": accuracy(y, p1), "acc_2": accuracy(y, p2),
                     "bacc_1": balanced_accuracy(y, p1), "bacc_2": balanced_accuracy(y, p2)})
    per = pd.DataFrame(rows)
    per["change"] = per["acc_2"] - per["acc_1"]
    per["bacc_change"] = per["bacc_2"] - per["bacc_1"]
    a1, a2 = per["acc_1"].to_numpy(), per["acc_2"].to_numpy()
    tests = {"accuracy": {"t_test": _ttest(a2, a1, "round 2 - round 1, paired over readers"),
                          "wilcoxon": _wilcoxon(a2, a1)},
             "balanced_accuracy": {"t_test": _ttest(per["bacc_2"].to_numpy(), per["bacc_1"].to_numpy(),
                                                    "round 2 - round 1, paired over readers"),
                                   "wilcoxon": _wilcoxon(per["bacc_2"].to_numpy(), per["bacc_1"].to_numpy())}}
    groups = []
    for exp, g in per.groupby("experience", sort=True):
        t = _ttest(g["acc_2"].to_numpy(), g["acc_1"].to_numpy(), f"group {exp}")
        groups.append({"experience": exp, "readers": len(g), "acc_1": g["acc_1"].mean(), "acc_2": g["acc_2"].mean(),
                       "change": g["change"].mean(), "p_value": t["p_value"]})
    # switching: pairs where round 1 disagreed with the AI; did round 2 take the AI's answer?
    disagree = wide[wide[1] != wide["ai_top1"]]
    switching: dict[str, Any] = {}
    for name, ai_right in (("ai_right", True), ("ai_wrong", False)):
        sub = disagree[(disagree["ai_top1"] == disagree["truth"]) == ai_right]
        switched = int((sub[2] == sub["ai_top1"]).sum())
        switching[name] = {"pairs": len(sub), "switched": switched,
                           "rate": switched / len(sub) if len(sub) else math.nan}
    # overall: how often the final answer equals the AI's
    switching["agree_with_ai"] = {1: float((wide[1] == wide["ai_top1"]).mean()),
                                  2: float((wide[2] == wide["ai_top1"]).mean())}
    kappa = {}
    for rnd in (1, 2):
        k, n = _kappa(df[df["round"] == rnd], labels)
        kappa[rnd] = {"kappa": k, "cases": n}
    mean_ci = lambda v: bootstrap_ci(np.mean, np.asarray(v, float), n_resamples=n_boot, seed=seed)  # noqa: E731
    ai_acc = float((wide.drop_duplicates("case_id")["ai_top1"] == wide.drop_duplicates("case_id")["truth"]).mean())
    metrics = {
        "accuracy_round1": mean_ci(a1), "accuracy_round2": mean_ci(a2), "accuracy_change": mean_ci(a2 - a1),
        "balanced_accuracy_round1": mean_ci(per["bacc_1"]), "balanced_accuracy_round2": mean_ci(per["bacc_2"]),
        "balanced_accuracy_change": mean_ci(per["bacc_change"]),
        "p_ttest": Metric(tests["accuracy"]["t_test"]["p_value"], n=len(per)),
        "p_wilcoxon": Metric(tests["accuracy"]["wilcoxon"]["p_value"], n=len(per)),
        "switch_to_ai_when_right": Metric(switching["ai_right"]["rate"], n=switching["ai_right"]["pairs"]),
        "switch_to_ai_when_wrong": Metric(switching["ai_wrong"]["rate"], n=switching["ai_wrong"]["pairs"]),
        "fleiss_kappa_round1": Metric(kappa[1]["kappa"], n=kappa[1]["cases"]),
        "fleiss_kappa_round2": Metric(kappa[2]["kappa"], n=kappa[2]["cases"]),
        "ai_accuracy": Metric(ai_acc, n=int(wide["case_id"].nunique())),
    }
    return StudyAnalysis(per, pd.DataFrame(groups), tests, switching, kappa, metrics)


def make_plots(res: StudyAnalysis, out_dir: str | Path) -> list[Path]:
    """Per-reader accuracy without and with AI (one line per reader), and the switching rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 4))
    groups = sorted(res.per_reader["experience"].unique())
    colours = plt.get_cmap("tab10")
    for _, r in res.per_reader.iterrows():
        ax.plot([1, 2], [r["acc_1"], r["acc_2"]], "o-", alpha=0.7, color=colours(groups.index(r["experience"]) % 10))
    ax.plot([1, 2], [res.per_reader["acc_1"].mean(), res.per_reader["acc_2"].mean()], "k-", lw=3, label="mean")
    for i, g in enumerate(groups):
        ax.plot([], [], "o-", color=colours(i % 10), label=g)
    ax.set_xticks([1, 2], ["round 1\nunaided", "round 2\nwith AI"])
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.7, 2.3)
    ax.legend(fontsize=8)
    p = res.metrics["p_ttest"].value
    ax.set_title(f"change {res.metrics['accuracy_change'].value:+.3f} (paired t p={p:.2g})", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "reader_accuracy.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = ["AI right", "AI wrong"]
    rates = [res.switching["ai_right"]["rate"], res.switching["ai_wrong"]["rate"]]
    ax.bar(names, rates, color=["#2a7f62", "#b3412e"])
    for i, k in enumerate(("ai_right", "ai_wrong")):
        ax.text(i, (rates[i] if rates[i] == rates[i] else 0) + 0.02,
                f"{res.switching[k]['switched']}/{res.switching[k]['pairs']}", ha="center")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("switched to the AI's answer")
    ax.set_title("When round 1 disagreed with the AI", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "switching.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_analysis(res: StudyAnalysis, study_name: str, out_dir: str | Path, config: dict | None = None) -> Path:
    """The suite's results JSON (``readers__<study>__reader-study.json``) + the plots next to it."""
    plots = make_plots(res, out_dir)
    extra = {"per_reader": res.per_reader.to_dict("records"), "groups": res.groups.to_dict("records"),
             "tests": res.tests, "switching": {k: v for k, v in res.switching.items() if k != "agree_with_ai"},
             "agree_with_ai": {str(k): v for k, v in res.switching["agree_with_ai"].items()},
             "kappa": {str(k): v for k, v in res.kappa.items()}, "plots": [p.name for p in plots]}
    return write_result(Result(backbone="readers", dataset=study_name, task=TASK, metrics=res.metrics,
                               config=config or {}, extra=extra), out_dir)


def simulate_answers(n_readers: int, n_cases: int, labels: list[str], acc_round1: float | list[float],
                     follow_ai: float | list[float], ai_accuracy: float, seed: int = 0,
                     experience: list[str] | None = None) -> pd.DataFrame:
    """A simulated study with known effects (for tests and the evidence script).

    Round 1: each reader is right with probability ``acc_round1`` (else a uniformly drawn wrong
    label). Round 2: the reader takes the AI's top-1 with probability ``follow_ai``, otherwise
    answers afresh as in round 1. Exactly ``round(ai_accuracy * n_cases)`` AI answers are right.
    Expected change in accuracy: ``follow_ai * (ai_accuracy - acc_round1)``.
    """
    rng = np.random.default_rng(seed)
    acc = np.broadcast_to(np.asarray(acc_round1, float), (n_readers,))
    follow = np.broadcast_to(np.asarray(follow_ai, float), (n_readers,))
    truth = [labels[i % len(labels)] for i in range(n_cases)]
    n_right = round(ai_accuracy * n_cases)
    right = np.zeros(n_cases, bool)
    right[rng.permutation(n_cases)[:n_right]] = True

    def wrong(t: str) -> str:
        return str(rng.choice([lab for lab in labels if lab != t]))

    ai = [t if ok else wrong(t) for t, ok in zip(truth, right, strict=True)]
    rows = []
    for r in range(n_readers):
        for c in range(n_cases):
            a1 = truth[c] if rng.random() < acc[r] else wrong(truth[c])
            follows = rng.random() < follow[r]
            a2 = ai[c] if follows else (truth[c] if rng.random() < acc[r] else wrong(truth[c]))
            for rnd, d in ((1, a1), (2, a2)):
                rows.append({"reader": f"reader{r + 1:02d}", "experience": experience[r] if experience else "",
                             "case_id": c + 1, "round": rnd, "diagnosis": d, "truth": truth[c], "ai_top1": ai[c]})
    return pd.DataFrame(rows)
