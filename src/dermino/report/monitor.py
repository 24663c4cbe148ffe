"""The collapse watchdog of pretraining runs in the report: each run's monitor.csv as a table.

One row per run and monitored quantity: its value at the first and the last monitor step, the
change, and the worst value in between (the lowest quality, the largest Gram distance), so a dip
that recovered is still visible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from dermino.report.html import Section

QUANTITIES = {  # monitor.csv column -> (label, larger is worse)
    "knn_macro_auroc": ("kNN macro AUROC", False),
    "knn_accuracy": ("kNN accuracy", False),
    "rankme": ("RankMe (effective rank of CLS embeddings)", False),
    "dense_dice": ("dense probe lesion Dice (patch features)", False),
    "gram_distance": ("Gram distance to the start", True),
}


def _fmt(value: float) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def monitor_table(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows (run, quantity, first step and value, last step and value, change, worst) per monitored column."""
    rows = []
    for run, df in frames.items():
        df = df.sort_values("step")
        for col, (label, larger_is_worse) in QUANTITIES.items():
            if col not in df:
                continue
            kept = df.assign(value=pd.to_numeric(df[col], errors="coerce")).dropna(subset=["value"])
            if kept.empty:
                continue
            first, last = kept.iloc[0], kept.iloc[-1]
            worst = kept["value"].max() if larger_is_worse else kept["value"].min()
            rows.append({"run": run, "quantity": label, "first step": int(first["step"]), "first": _fmt(first["value"]),
                         "last step": int(last["step"]), "last": _fmt(last["value"]),
                         "change": f"{last['value'] - first['value']:+.4g}", "worst": _fmt(float(worst))})
    return pd.DataFrame(rows)


def monitor_section(run_dirs: Mapping[str, Path]) -> Section | None:
    """The watchdog section for the runs that have a monitor.csv (None if none has)."""
    frames = {name: pd.read_csv(d / "monitor.csv") for name, d in run_dirs.items() if (d / "monitor.csv").is_file()}
    frames = {n: f for n, f in frames.items() if len(f)}
    if not frames:
        return None
    return Section(
        "Pretraining watchdog (monitor.csv)",
        paragraphs=["Every monitor step scores the teacher on held-out images: kNN on labelled images and "
                    "RankMe on their CLS embeddings, a closed-form linear segmentation probe on its patch "
                    "features (lesion Dice; the same number as `dermino segment` with linear_fit: ridge) and "
                    "the Gram distance of its patch similarities to the start's. 'worst' is the lowest quality "
                    "(the largest distance) over all monitor steps; any of them can be the collapse guard's "
                    "metric (run.collapse_metric)."],
        tables=[("Monitor: first → last", monitor_table(frames))],
    )
