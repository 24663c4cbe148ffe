"""The disease names a set of manifests uses: what the vocabulary and the knowledge loss start from."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from dermino.data.manifest import split_labels


def collect_names(manifests: list[pd.DataFrame]) -> tuple[Counter[str], dict[str, set[str]]]:
    """Names in ``labels``/``label_space`` of the manifests: image counts and source datasets.

    A name only found in a ``label_space`` gets count 0 (no image carries it here).
    """
    counts: Counter[str] = Counter()
    sources: dict[str, set[str]] = {}
    for df in manifests:
        src = df["source"].astype(str) if "source" in df.columns else pd.Series([""] * len(df), index=df.index)
        for col, weight in (("labels", 1), ("label_space", 0)):
            if col not in df.columns:
                continue
            grouped = pd.DataFrame({"cell": df[col].astype(str), "source": src}).value_counts()
            for (cell, source), n in grouped.items():
                for name in split_labels(cell):
                    counts[name] += weight * int(n)
                    if source:
                        sources.setdefault(name, set()).add(str(source))
    return counts, sources
