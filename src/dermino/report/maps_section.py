"""Report section of the embedding maps, rendered from the files ``write_maps`` left behind."""

from __future__ import annotations

import json
from pathlib import Path

from dermino.report.html import Figure, Section


def maps_section(folder: str | Path, title: str = "Embedding maps") -> Section:
    """A ``Section`` listing every map of ``folder/maps.json`` (missing PNGs are named, not hidden)."""
    folder = Path(folder)
    meta_path = folder / "maps.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no maps.json in {folder} (write it with `dermino maps`)")
    meta = json.loads(meta_path.read_text())
    section = Section(title, paragraphs=[
        f"{meta['n_images']} images projected to 2-D with {meta['method']}"
        + (f", and {meta['n_prototypes']} disease-name prototypes" if meta.get("n_prototypes") else "")
        + ". Maps show neighbourhoods, not distances between clusters."])
    for m in meta["maps"]:
        png = folder / m["png"]
        if png.is_file():
            section.figures.append(Figure(png, m.get("caption", "")))
        else:
            section.paragraphs.append(f"missing map {png}")
    return section
