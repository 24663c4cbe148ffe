"""Report sections built from results files alone (one table per task, then the figures)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from dermino.report.html import Figure, Section, results_table
from dermino.results import Result

#: metrics shown first when present; others follow alphabetically
_PREFERRED = ["auroc_macro", "f1_macro", "balanced_accuracy", "accuracy", "dice", "jaccard"]


def sections_from_results(results: list[Result], figures_dir: Path | None = None) -> list[Section]:
    """One section per task, one table per task with every metric that task reported."""
    from dermino.report.federated import TASK as FEDERATED
    from dermino.report.federated import federated_sections
    from dermino.report.study import TASK as STUDY
    from dermino.report.study import study_sections

    by_task: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.task not in (FEDERATED, STUDY):
            by_task[r.task].append(r)
    sections = federated_sections(results) + study_sections(results, figures_dir)
    for task, items in sorted(by_task.items()):
        names = sorted({m for r in items for m in r.metrics})
        ordered = [m for m in _PREFERRED if m in names] + [m for m in names if m not in _PREFERRED]
        sections.append(Section(title=task, tables=[("", results_table(items, ordered[:8]))]))
    if figures_dir is not None:
        shown = {p for r in results if r.task == STUDY for p in r.extra.get("plots", [])}
        pngs = sorted(p for p in figures_dir.rglob("*.png") if p.name not in shown)
        if pngs:
            sections.append(Section("Figures", figures=[Figure(p, p.stem) for p in pngs]))
    return sections
