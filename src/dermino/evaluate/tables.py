"""Summary tables built from the results files: Markdown, CSV and HTML, with CIs and marks.

Each row is (dataset, protocol, backbone); each metric cell reads ``value [low, high]``.
The main metric of every non-reference backbone carries a significance mark from a
paired bootstrap against the reference backbone on the same test images
(``*`` p<0.05, ``**`` p<0.01, ``***`` p<0.001); the differences, CIs and p-values are also
written to ``comparisons.json``.

Where the calibration protocol ran (``calibration-<protocol>`` results), the rows of that
protocol also carry the overall ECE after temperature scaling and the largest per-group ECE
gap and equalised-odds gap (TPR or FPR, any class) with their CIs; ``!`` marks a gap whose
CI excludes zero, the same flag the report raises.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from dermino.evaluate.metrics import CLASSIFICATION_METRICS
from dermino.evaluate.stats import paired_bootstrap, significance_mark
from dermino.results import format_metric, read_results, result_filename

MAIN_TASKS = ("knn", "linear")


def compare(out_dir: Path, dataset: str, task: str, a: str, b: str, metric: str,
            n_resamples: int, seed: int) -> dict | None:
    """Paired bootstrap of ``metric(a) - metric(b)`` from the saved predictions."""
    pa = out_dir / "predictions" / (Path(result_filename(a, dataset, task)).stem + ".npz")
    pb = out_dir / "predictions" / (Path(result_filename(b, dataset, task)).stem + ".npz")
    if not (pa.is_file() and pb.is_file()):
        return None
    za, zb = np.load(pa), np.load(pb)
    if not np.array_equal(za["images"], zb["images"]):
        raise ValueError(f"{pa.name} and {pb.name} are not on the same test images: cannot pair them")
    y = za["y_true"]
    present = [int(k) for k in np.unique(y)]
    fn = CLASSIFICATION_METRICS[metric]
    # stack probs and pred so one array per backbone goes through the paired resampler
    stack = lambda z: np.concatenate([z["probs"], z["pred"][:, None].astype(float)], 1)  # noqa: E731
    metric_fn = lambda yy, s: fn(yy, s[:, :-1], s[:, -1].astype(int), present)  # noqa: E731
    res = paired_bootstrap(metric_fn, y, stack(za), stack(zb), n_resamples=n_resamples, seed=seed)
    return {"dataset": dataset, "task": task, "backbone": a, "reference": b, "metric": metric,
            "diff": res.diff.value, "diff_ci": [res.diff.ci_low, res.diff.ci_high],
            "p_value": res.p_value, "method": res.method, "n": res.diff.n, "skipped": res.n_skipped}


def _largest_gap(metrics: dict, prefixes: tuple[str, ...]) -> str:
    """``attribute: value [low, high]`` of the largest |gap| among metrics named ``prefix|...``."""
    gaps = [(k, m) for k, m in metrics.items() if k.startswith(prefixes) and m.value is not None
            and np.isfinite(m.value)]
    if not gaps:
        return ""
    key, m = max(gaps, key=lambda km: abs(km[1].value))
    flag = " !" if m.ci_low is not None and m.ci_high is not None and (m.ci_low > 0 or m.ci_high < 0) else ""
    return f"{key.split('|', 1)[1]}: {format_metric(m)}{flag}"


def calibration_columns(results) -> dict[tuple[str, str, str], dict[str, str]]:
    """(dataset, protocol, backbone) -> ECE and the largest calibration / equalised-odds gaps."""
    out = {}
    for r in results:
        if not r.task.startswith("calibration-"):
            continue
        out[(r.dataset, r.task.removeprefix("calibration-"), r.backbone)] = {
            "ece": format_metric(r.metrics.get("ece")),
            "largest_ece_gap": _largest_gap(r.metrics, ("ece_gap|",)),
            "largest_eo_gap": _largest_gap(r.metrics, ("tpr_gap|", "fpr_gap|")),
        }
    return out


def write_tables(out_dir: str | Path, reference: str, metric: str = "auroc",
                 n_resamples: int = 1000, seed: int = 0) -> dict[str, Path]:
    out_dir = Path(out_dir)
    results = read_results(out_dir / "results")
    rows, comparisons = [], []
    metric_names = list(CLASSIFICATION_METRICS)
    calibration = calibration_columns(results)
    cal_names = ["ece", "largest_ece_gap", "largest_eo_gap"] if calibration else []
    for r in sorted(results, key=lambda r: (r.dataset, r.task, r.backbone != reference, r.backbone)):
        if r.task not in MAIN_TASKS:
            continue
        mark = ""
        if r.backbone != reference:
            c = compare(out_dir, r.dataset, r.task, r.backbone, reference, metric, n_resamples, seed)
            if c:
                comparisons.append(c)
                mark = significance_mark(c["p_value"])
        row = {"dataset": r.dataset, "protocol": r.task, "backbone": r.backbone}
        for m in metric_names:
            row[m] = format_metric(r.metrics.get(m)) + (mark if m == metric else "")
        for name in cal_names:
            row[name] = calibration.get((r.dataset, r.task, r.backbone), {}).get(name, "")
        row["n_test"] = r.metrics[metric].n if metric in r.metrics else None
        rows.append(row)
    table = pd.DataFrame(rows, columns=["dataset", "protocol", "backbone", *metric_names, *cal_names, "n_test"])
    tdir = out_dir / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    note = (f"Values: metric [95 % percentile-bootstrap CI]. Marks on {metric}: paired bootstrap vs "
            f"reference '{reference}' (* p<0.05, ** p<0.01, *** p<0.001).")
    if cal_names:
        note += (" ece: top-label ECE after temperature scaling fitted on validation; largest_ece_gap / "
                 "largest_eo_gap: the largest difference between groups in ECE / in TPR or FPR (threshold "
                 "chosen on validation), attribute and class named; ! = its CI excludes zero.")
    paths = {"csv": tdir / "summary.csv", "md": tdir / "summary.md", "html": tdir / "summary.html",
             "comparisons": tdir / "comparisons.json"}
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(_markdown(table) + "\n\n" + note + "\n" + _fewshot_markdown(results))
    paths["html"].write_text(
        "<!doctype html><meta charset='utf-8'><title>dermino evaluation</title>"
        "<style>td,th{padding:4px 8px;border:1px solid #ccc}table{border-collapse:collapse}</style>"
        + table.to_html(index=False, escape=True) + f"<p>{html.escape(note)}</p>"
    )
    paths["comparisons"].write_text(json.dumps(comparisons, indent=2))
    return paths


def _markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(row[c]) else str(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _fewshot_markdown(results) -> str:
    parts = []
    for r in results:
        if r.task != "fewshot":
            continue
        main = r.extra.get("main_metric", "auroc")
        parts.append(f"\n### Few-shot: {r.backbone} on {r.dataset} ({main}, mean ± sd over seeds)\n")
        parts.append("| protocol | setting | n labelled | mean ± sd |\n|---|---|---|---|")
        for p, kinds in r.extra.get("curves", {}).items():
            for kind, settings in kinds.items():
                for setting, e in settings.items():
                    label = f"{setting}/class" if kind == "shots" else f"{float(setting):.0%} labels"
                    parts.append(f"| {p} | {label} | {e['n_labelled']} | "
                                 f"{e[main]['mean']:.3f} ± {e[main]['std']:.3f} |")
    return "\n".join(parts)
