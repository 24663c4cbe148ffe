"""The leaderboard's report section: forest plots and tables, from ``leaderboard.json`` only.

Plots (PNG, embedded in the HTML): per dataset a forest plot of the main metric with its
95 % CI for every backbone and protocol; a label-efficiency curve per dataset; fairness
(AUROC per group) and calibration (ECE per group after temperature scaling) forest plots per
attribute, which replace the long per-group table in the HTML (the Markdown keeps it).
Tables: ranks (contaminated rows unranked), paired tests against the reference, seed
comparisons, equalised-odds / ECE gaps whose CI excludes zero, contamination and failures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from dermino.report.html import Figure, Section, write_report


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in s)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _forest(frame: pd.DataFrame, label_cols: list[str], title: str, xlabel: str, path: Path) -> Path:
    """One horizontal CI bar per row of ``frame`` (value, ci_low, ci_high), labelled by ``label_cols``."""
    plt = _plt()
    frame = frame.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(frame) + 1.2))
    ys = list(range(len(frame)))[::-1]
    for y, r in zip(ys, frame.itertuples(), strict=True):
        lo = r.ci_low if r.ci_low is not None and not _nan(r.ci_low) else r.value
        hi = r.ci_high if r.ci_high is not None and not _nan(r.ci_high) else r.value
        ax.plot([lo, hi], [y, y], color="#1f77b4", lw=2)
        ax.plot([r.value], [y], "o", color="#d62728" if getattr(r, "flag", False) else "#1f77b4")
    ax.set_yticks(ys)
    ax.set_yticklabels([" · ".join(str(getattr(r, c)) for c in label_cols) for r in frame.itertuples()], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _nan(x) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def _label_efficiency(frame: pd.DataFrame, dataset: str, metric: str, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for bb, sub in frame.groupby("backbone", sort=True):
        sub = sub.assign(fraction=sub["group"].str.replace("fraction=", "").astype(float)).sort_values("fraction")
        x = sub["fraction"] * 100
        ax.plot(x, sub["value"], marker="o", label=bb)
        ax.fill_between(x, sub["ci_low"].astype(float), sub["ci_high"].astype(float), alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("% of training labels (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"Label efficiency: {dataset}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def leaderboard_sections(folder: str | Path) -> list[Section]:
    """The report sections of a leaderboard folder (``leaderboard.json`` + cells), plots written to plots/."""
    folder = Path(folder)
    data = json.loads((folder / "leaderboard.json").read_text())
    rows = pd.DataFrame(data["rows"], columns=data["columns"])
    metric = data["main_metric"]
    plots = folder / "plots"
    sections: list[Section] = []

    main = Section("Leaderboard", paragraphs=[
        f"Preset {data.get('preset') or '(none)'}; main metric {metric} with 95 % percentile-bootstrap CIs over "
        f"test images; paired tests against {data['reference']} on the same images. Rows whose test images "
        "overlap a backbone's declared pretraining corpus above the threshold are not ranked."])
    ranks = pd.DataFrame(data["ranks"])
    if not ranks.empty:
        main.tables.append(("Ranks", ranks))
    plain = rows[(rows.metric == metric) & (rows.group.fillna("") == "")
                 & ~rows.protocol.str.startswith(("fairness", "calibration", "label-efficiency"))]
    for ds, sub in plain.groupby("dataset", sort=True):
        sub = sub.sort_values(["protocol", "value"], ascending=[True, False])
        main.figures.append(Figure(_forest(sub, ["protocol", "backbone"], f"{ds}: {metric} (95 % CI)", metric,
                                           plots / f"forest_{_safe(ds)}.png"), f"{ds}: {metric} per backbone and protocol"))
    if data["paired_tests"]:
        main.tables.append(("Paired tests against the reference", pd.DataFrame(data["paired_tests"])))
    sections.append(main)

    le = rows[(rows.protocol == "label-efficiency") & rows.group.fillna("").str.startswith("fraction=")]
    if not le.empty:
        sec = Section("Label efficiency", paragraphs=[
            "Linear probes on 1-100 % of the training labels (whole lesions, stratified, the same subsets for "
            "every backbone); mean over seeds with a 95 % CI over test images. AULC: area under the curve on a "
            "log-fraction axis, normalised to the metric's scale."])
        for ds, sub in le.groupby("dataset", sort=True):
            sec.figures.append(Figure(_label_efficiency(sub, ds, metric, plots / f"label_efficiency_{_safe(ds)}.png"),
                                      f"{ds}: {metric} against the share of labels"))
        aulc = rows[(rows.protocol == "label-efficiency") & (rows.metric == "aulc")]
        if not aulc.empty:
            sec.tables.append(("Area under the label-efficiency curve", aulc[["dataset", "backbone", "value", "ci_low",
                                                                             "ci_high"]]))
        sections.append(sec)

    fair = rows[rows.protocol.str.startswith("fairness-") & (rows.metric == metric) & rows.group.fillna("").str.contains("=")]
    cal = rows[rows.protocol.str.startswith("calibration-") & (rows.metric == "ece") & rows.group.fillna("").str.contains("=")]
    if not fair.empty or not cal.empty:
        sec = Section("Fairness and calibration by group", paragraphs=[
            f"{metric} per group (fairness) and expected calibration error per group after temperature scaling fitted "
            "on validation (calibration), 95 % CIs. The per-group table stays in the Markdown report."])
        for name, frame, xlabel in (("fairness", fair, metric), ("calibration", cal, "ECE")):
            if frame.empty:
                continue
            frame = frame.assign(attribute=frame.group.str.split("=").str[0])
            for (ds, attr), sub in frame.groupby(["dataset", "attribute"], sort=True):
                sub = sub.sort_values(["group", "backbone"])
                sec.figures.append(Figure(_forest(sub, ["group", "backbone"], f"{ds}: {xlabel} by {attr}", xlabel,
                                                  plots / f"{name}_{_safe(ds)}_{_safe(attr)}.png"),
                                          f"{ds}: {xlabel} by {attr}"))
        gaps = rows[rows.metric.isin(["ece_gap", "tpr_gap", "fpr_gap"])].copy()
        if not gaps.empty:
            gaps["flag"] = [(lo is not None and not _nan(lo) and lo > 0) or (hi is not None and not _nan(hi) and hi < 0)
                            for lo, hi in zip(gaps.ci_low, gaps.ci_high, strict=True)]
            flagged = gaps[gaps.flag]
            sec.paragraphs.append(f"{len(flagged)} of {len(gaps)} gaps have a CI that excludes zero (flagged).")
            if not flagged.empty:
                sec.tables.append(("Flagged gaps (CI excludes zero)", flagged[COLS_GAP]))
            sec.tables.append(("Per-group values (Markdown)", pd.concat([fair, cal])[
                ["dataset", "protocol", "backbone", "metric", "group", "value", "ci_low", "ci_high", "n"]]))
        sections.append(sec)

    seeds = data.get("seed_comparisons") or []
    if seeds:
        table = pd.DataFrame([{k: v for k, v in s.items() if k != "pairs"} for s in seeds])
        sections.append(Section("Recipes over pretraining seeds", paragraphs=[
            "Mean ± sd over pretraining seeds beside the per-seed paired-bootstrap CIs; a difference is significant "
            "only when it holds (CI excludes zero, same side) for every seed pair."], tables=[("Seed comparisons", table)]))
    contamination = rows[rows.protocol == "contamination"]
    extra = Section("Contamination and failures")
    if not contamination.empty:
        extra.tables.append(("Share of test images in the declared pretraining corpus",
                             contamination[["backbone", "dataset", "value", "n"]]))
    if data["failures"]:
        extra.tables.append(("Failed cells", pd.DataFrame(data["failures"])))
    if extra.tables:
        sections.append(extra)
    return sections


COLS_GAP = ["dataset", "protocol", "backbone", "metric", "group", "value", "ci_low", "ci_high"]


def write_leaderboard_report(folder: str | Path, title: str = "dermino leaderboard") -> tuple[Path, Path]:
    """``report.html`` (plots embedded) and ``report.md`` in the leaderboard folder."""
    return write_report(folder, title, leaderboard_sections(folder))
