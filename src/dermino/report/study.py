"""The reader-study section of the HTML report, built from the ``reader-study`` results file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermino.report.html import Figure, Section
from dermino.results import Result, format_metric

TASK = "reader-study"


def _p(v: object) -> str:
    return "–" if v is None or v != v else f"{float(v):.3g}"  # noqa: PLR0124  (NaN check)


def study_sections(results: list[Result], folder: Path | None = None) -> list[Section]:
    """One section per study: summary, tests, per reader, experience groups, switching, plots."""
    out = []
    for r in (x for x in results if x.task == TASK):
        m, e = r.metrics, r.extra
        summary = pd.DataFrame([
            {"measure": "accuracy, round 1 (unaided)", "value": format_metric(m.get("accuracy_round1"))},
            {"measure": "accuracy, round 2 (with AI)", "value": format_metric(m.get("accuracy_round2"))},
            {"measure": "change with AI help", "value": format_metric(m.get("accuracy_change"))},
            {"measure": "balanced accuracy, round 1", "value": format_metric(m.get("balanced_accuracy_round1"))},
            {"measure": "balanced accuracy, round 2", "value": format_metric(m.get("balanced_accuracy_round2"))},
            {"measure": "Fleiss' kappa, round 1", "value": format_metric(m.get("fleiss_kappa_round1"))},
            {"measure": "Fleiss' kappa, round 2", "value": format_metric(m.get("fleiss_kappa_round2"))},
            {"measure": "AI top-1 accuracy on the study cases", "value": format_metric(m.get("ai_accuracy"))},
        ])
        tests = pd.DataFrame([{"outcome": k, "test": t, "statistic": _p(d.get("statistic")),
                               "p": _p(d.get("p_value")), "readers": d.get("n")}
                              for k, v in e.get("tests", {}).items() for t, d in v.items()])
        switching = pd.DataFrame([{"AI answer": k.replace("ai_", "AI "), "round-1 disagreements": v["pairs"],
                                   "switched to AI": v["switched"], "rate": _p(v["rate"])}
                                  for k, v in e.get("switching", {}).items()])
        per = pd.DataFrame(e.get("per_reader", []))
        cols = [c for c in ("reader", "experience", "n_cases", "acc_1", "acc_2", "bacc_1", "bacc_2", "change")
                if c in per]
        figures = [Figure(folder / p, p) for p in e.get("plots", [])] if folder else []
        out.append(Section(
            title=f"Reader study: {r.dataset}",
            paragraphs=["Round 1 unaided, round 2 the same cases in a new order with the AI's top-3, attention "
                        "overlay and similar cases. Tests pair each reader's two rounds; CIs bootstrap over readers."],
            tables=[("Summary", summary), ("Paired tests", tests), ("Per reader", per[cols].round(3)),
                    ("By experience", pd.DataFrame(e.get("groups", [])).round(3)),
                    ("Switching to the AI's answer (round 1 disagreed with the AI)", switching)],
            figures=figures))
    return out
