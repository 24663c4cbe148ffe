"""``dermino report RESULTS_DIR``: turn a folder of results JSON (and PNG plots) into a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from dermino.report.html import write_report
from dermino.report.sections import sections_from_results
from dermino.results import read_results


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
