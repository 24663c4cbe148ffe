"""A single self-contained HTML report (and its Markdown twin) built from results files.

Why one file with embedded images: clinicians and reviewers open it offline, mail it or
attach it to a paper's supplement without a folder of loose PNGs. Every number shown is
read from the run's results JSON files (``dermino.results``), never typed in here.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dermino.files import write_text_atomic
from dermino.results import Metric, Result, format_metric  # noqa: F401  (format_metric re-exported)


@dataclass
class Figure:
    path: Path
    caption: str = ""


@dataclass
class Section:
    """A titled part of the report: paragraphs, tables and figures, in that order."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def results_table(
    results: Iterable[Result], metrics: Sequence[str], index: Sequence[str] = ("dataset", "task", "backbone")
) -> pd.DataFrame:
    """One row per result, one column per metric, formatted with CIs."""
    rows = []
    for r in results:
        row = {"dataset": r.dataset, "task": r.task, "backbone": r.backbone}
        for name in metrics:
            row[name] = format_metric(r.metrics.get(name))
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=[*index, *metrics])
    return pd.DataFrame(rows).sort_values(list(index)).reset_index(drop=True)


def _img_tag(path: Path, caption: str) -> str:
    suffix = path.suffix.lower().lstrip(".") or "png"
    mime = "image/jpeg" if suffix in {"jpg", "jpeg"} else f"image/{suffix}"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(caption or path.name)}" src="data:{mime};base64,{data}"/>{cap}</figure>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.45}
h1{border-bottom:3px solid #7a3b2e;padding-bottom:.3em}h2{color:#7a3b2e;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #d5d8de;padding:.35em .6em;
text-align:left}th{background:#f3ece9}tr:nth-child(even) td{background:#fafafa}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#555;max-width:520px}
.note{color:#555;font-size:.9em}nav a{margin-right:1em}
"""


def render_html(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p class='note'>{html.escape(subtitle)}</p>")
    parts.append(
        "<nav>"
        + "".join(f"<a href='#s{i}'>{html.escape(s.title)}</a>" for i, s in enumerate(sections))
        + "</nav>"
    )
    for i, section in enumerate(sections):
        parts.append(f"<section id='s{i}'><h2>{html.escape(section.title)}</h2>")
        parts.extend(f"<p>{html.escape(p)}</p>" for p in section.paragraphs)
        for caption, table in section.tables:
            if caption:
                parts.append(f"<h3>{html.escape(caption)}</h3>")
            parts.append(table.to_html(index=False, escape=True, border=0))
        parts.extend(_img_tag(f.path, f.caption) for f in section.figures if f.path.is_file())
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(
    title: str, sections: Sequence[Section], subtitle: str = "", base: Path | None = None
) -> str:
    """Markdown twin of the HTML; figures are linked relative to ``base`` (the .md's folder)."""
    lines = [f"# {title}", ""]
    if subtitle:
        lines += [subtitle, ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for p in section.paragraphs:
            lines += [p, ""]
        for caption, table in section.tables:
            if caption:
                lines += [f"**{caption}**", ""]
            lines += [_markdown_table(table), ""]
        for f in section.figures:
            if f.path.is_file():
                link = os.path.relpath(f.path, base) if base is not None else f.path.name
                lines += [f"![{f.caption}]({Path(link).as_posix()})", ""]
    return "\n".join(lines)


def _markdown_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_"
    cols = [str(c) for c in df.columns]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        out.append("| " + " | ".join(str(v).replace("|", "/") for v in row.tolist()) + " |")
    return "\n".join(out)


def write_report(
    out_dir: str | Path, title: str, sections: Sequence[Section], subtitle: str = ""
) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "report.html"
    md_path = out_dir / "report.md"
    write_text_atomic(html_path, render_html(title, sections, subtitle))
    write_text_atomic(md_path, render_markdown(title, sections, subtitle, base=out_dir))
    return html_path, md_path
