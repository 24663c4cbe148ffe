"""Report section for federated runs: federated vs each site alone vs pooled, read from results files.

One table per (partition, metric): rows are the models, columns the test sets (each site's
held-out rows and their union), each cell the value with its bootstrap CI and, for every model
but the federated one, the paired difference to it and its p-value.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd

from dermino.report.html import Section, format_metric
from dermino.results import Result

TASK = "federated"
METRICS = {"auroc_macro": "macro AUROC", "f1_macro": "macro F1"}


def _cell(r: Result, metric: str) -> str:
    text = format_metric(r.metrics.get(metric))
    paired = r.extra.get("paired_vs_reference", {}).get(metric)
    if paired and paired.get("p_value") is not None and math.isfinite(paired["p_value"]):
        text += f" (Δ {paired['diff']:+.3f}, p={paired['p_value']:.3f})"
    return text


def federated_sections(results: list[Result]) -> list[Section]:
    """Sections for the ``federated`` results among ``results`` (none when there are none)."""
    by_partition: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.task == TASK:
            by_partition[r.extra.get("partition", r.dataset.split(":")[0])].append(r)
    sections = []
    for partition, items in sorted(by_partition.items()):
        tests = sorted({r.extra["test_set"] for r in items}, key=lambda t: (t == "union", t))
        methods = sorted({r.backbone for r in items}, key=lambda m: (not m.startswith("federated"), m != "pooled", m))
        cell = {(r.backbone, r.extra["test_set"]): r for r in items}
        tables = []
        for metric, label in METRICS.items():
            rows = [{"model": m, **{t: _cell(cell[(m, t)], metric) if (m, t) in cell else "–" for t in tests}}
                    for m in methods]
            tables.append((label, pd.DataFrame(rows)))
        first = items[0]
        cfg = first.config
        paragraph = (
            f"Sites = values of `{cfg.get('partition_column', '?')}` ({', '.join(first.extra.get('clients', []))}); "
            f"{cfg.get('strategy', '?')} for {cfg.get('rounds', '?')} rounds x {cfg.get('local_epochs', '?')} local "
            f"epochs (lr {cfg.get('lr', '?')}) training `{cfg.get('trainable', 'head')}` of a `{cfg.get('backbone', '?')}` "
            f"(the rest frozen). Local and pooled models train the same part for the same number of epochs. 95 % percentile bootstrap CIs ({cfg.get('n_resamples', '?')} resamples); "
            f"Δ and p: paired bootstrap against {first.extra.get('reference', 'the federated model')} on the same rows."
        )
        sections.append(Section(title=f"Federated fine-tuning: {partition}", paragraphs=[paragraph], tables=tables))
    return sections
