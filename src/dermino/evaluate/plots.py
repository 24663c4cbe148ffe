"""PNG figures from the results files: metric bars with CIs, fairness by group, few-shot curves.

Uses the Agg backend so it runs on headless machines and in CI.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from dermino.results import read_results  # noqa: E402


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in s)


def _err(values, lows, highs):
    v = np.asarray(values, float)
    lo = np.asarray([x if x is not None else np.nan for x in lows], float)
    hi = np.asarray([x if x is not None else np.nan for x in highs], float)
    return np.nan_to_num(np.stack([v - lo, hi - v]), nan=0.0).clip(min=0)


def make_plots(out_dir: str | Path, metric: str = "auroc") -> list[Path]:
    out_dir = Path(out_dir)
    results = read_results(out_dir / "results")
    pdir = out_dir / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    # 1. bars: one figure per dataset, groups = protocol, bars = backbone
    by_ds = defaultdict(list)
    for r in results:
        if r.task in ("knn", "linear") and metric in r.metrics:
            by_ds[r.dataset].append(r)
    for ds, rs in by_ds.items():
        tasks = sorted({r.task for r in rs})
        backbones = sorted({r.backbone for r in rs})
        fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(tasks) * len(backbones) ** 0.5, 3.5))
        width = 0.8 / len(backbones)
        for j, bb in enumerate(backbones):
            ms = [next((r.metrics[metric] for r in rs if r.task == t and r.backbone == bb), None) for t in tasks]
            vals = [m.value if m else np.nan for m in ms]
            err = _err(vals, [m.ci_low if m else None for m in ms], [m.ci_high if m else None for m in ms])
            ax.bar(np.arange(len(tasks)) + j * width, vals, width, yerr=err, capsize=3, label=bb)
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
        ax.set_ylabel(f"{metric} (95 % CI)")
        ax.set_title(ds)
        ax.legend(fontsize=7)
        written.append(_save(fig, pdir / f"bars_{_safe(ds)}.png"))

    # 2. fairness: one figure per (dataset, attribute), bars per group x backbone
    for r in results:
        if not r.task.startswith("fairness"):
            continue
        for attr, rep in r.extra.get("attributes", {}).items():
            groups = list(rep["groups"])
            ms = [rep["groups"][g].get(metric, {}) for g in groups]
            vals = [m.get("value", np.nan) for m in ms]
            err = _err(vals, [m.get("ci_low") for m in ms], [m.get("ci_high") for m in ms])
            fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(groups), 3.2))
            ax.bar(range(len(groups)), vals, yerr=err, capsize=3, color="tab:orange")
            ax.set_xticks(range(len(groups)), [f"{g}\n(n={rep['groups'][g]['n']})" for g in groups], fontsize=7)
            ax.set_ylabel(f"{metric} (95 % CI)")
            ax.set_title(f"{r.backbone} / {r.dataset} by {attr}", fontsize=9)
            written.append(_save(fig, pdir / f"fairness_{_safe(r.dataset)}_{_safe(r.backbone)}_{_safe(attr)}.png"))

    # 3. few-shot curves: one figure per dataset, a line per (backbone, protocol)
    fs = defaultdict(list)
    for r in results:
        if r.task == "fewshot":
            fs[r.dataset].append(r)
    for ds, rs in fs.items():
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for r in rs:
            main = r.extra.get("main_metric", metric)
            for p, kinds in r.extra.get("curves", {}).items():
                for ax, kind in zip(axes, ("shots", "fractions"), strict=True):
                    pts = sorted((float(k), e[main]["mean"], e[main]["std"]) for k, e in kinds[kind].items())
                    if not pts:
                        continue
                    x, m, s = map(np.asarray, zip(*pts, strict=True))
                    ax.errorbar(x, m, yerr=s, marker="o", capsize=2, label=f"{r.backbone} {p}")
        for ax, xlabel in zip(axes, ("labelled images per class", "fraction of training labels"), strict=True):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{metric} (mean ± sd)")
        axes[0].legend(fontsize=7)
        fig.suptitle(ds)
        written.append(_save(fig, pdir / f"fewshot_{_safe(ds)}.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
