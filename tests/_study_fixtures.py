"""Builders for the reader-study tests: a small study on bundled HAM10000 images."""

from __future__ import annotations

from pathlib import Path

from _serve_fixtures import tiny_classifier
from dermino.data.sample import sample_manifests
from dermino.serve.index_build import build_index
from dermino.study.setup import Created, create_study


def readers_csv(path: Path, readers: list[tuple[str, str]]) -> Path:
    path.write_text("name,experience\n" + "".join(f"{n},{e}\n" for n, e in readers))
    return path


def make_study(tmp: Path, n_cases: int = 4, readers: list[tuple[str, str]] | None = None,
               index: bool = True) -> Created:
    clf = tiny_classifier()
    ham = sample_manifests(tmp / "m")["ham10000"]
    idx = build_index(clf, ham, tmp / "index", cache_dir=str(tmp / "c"), progress=False) if index else None
    rows = readers or [("alice", "senior"), ("bob", "junior")]
    return create_study(ham, n_cases, readers_csv(tmp / "readers.csv", rows), clf, idx, tmp / "study", seed=0)
