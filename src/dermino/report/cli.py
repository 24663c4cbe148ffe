"""``dermino report RESULTS_DIR``: turn a folder of results JSON (and PNG plots) into a report."""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from dermino.report.html import Figure, Section, results_table, write_report
from dermino.results import Result, read_results

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


def run(args: argparse.Namespace) -> int:
    folder = Path(args.results)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder not found: {folder}")
    results = read_results(folder)
    if not results:
        raise ValueError(f"no results JSON files (*__*__*.json) in {folder}")
    sections = sections_from_results([r for r in results if r.task != "captioning"], folder)
    if any(r.task == "captioning" for r in results):
        from dermino.report.captioning import captioning_section

        sections.insert(len(sections) - (sections[-1].title == "Figures" if sections else 0), captioning_section(folder))
    for maps_dir in getattr(args, "maps", None) or []:
        from dermino.report.maps_section import maps_section

        sections.append(maps_section(maps_dir))
    html_path, md_path = write_report(args.out or folder, args.title, sections, f"{len(results)} results")
    print(f"wrote {html_path} and {md_path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="build an HTML + Markdown report from results JSON files")
    p.add_argument("results", help="folder of results JSON files (and PNG figures)")
    p.add_argument("--out", help="output folder (default: the results folder)")
    p.add_argument("--title", default="dermino results")
    p.add_argument("--maps", nargs="*", default=[], help="folders written by `dermino maps` to include")
    p.set_defaults(func=run)
