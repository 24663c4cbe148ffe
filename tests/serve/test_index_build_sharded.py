"""``dermino index build`` shared out across torchrun processes writes the single-process index, file for file."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

from _serve_fixtures import tiny_classifier
from _torchrun import failure, run_torchrun
from dermino.classifier.model import save_classifier
from dermino.cli import main


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.slow  # starts torchrun and 2 processes that import torch
def test_two_processes_write_the_single_process_index(bundled_manifests, tmp_path):
    clf = save_classifier(tiny_classifier(), tmp_path / "classifier")

    def argv(name: str) -> list[str]:  # every PH2 row (no split filter), chunks of 8: 8 chunks
        return ["index", "build", "--manifest", str(bundled_manifests["ph2"]), "--classifier", str(clf),
                "--out", str(tmp_path / name / "index"), "--splits", "--chunk-size", "8"]

    res = run_torchrun(2, argv("two"))
    assert res.returncode == 0, failure(res)
    assert res.stdout.count("index: 60 cases") == 1  # rank 0 reports, rank 1 is quiet
    assert len(list((tmp_path / "two" / "cache" / "embeddings").glob("*/chunk_*.npy"))) == 8
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(argv("one")) == 0
    finally:
        torch.set_num_threads(threads)
    one, two = _files(tmp_path / "one" / "index"), _files(tmp_path / "two" / "index")
    assert one.keys() == two.keys() and {"embeddings.safetensors", "records.json", "index.json"} <= one.keys()
    assert len([k for k in one if k.startswith("thumbs")]) == 60
    for name in one:
        assert one[name] == two[name], name
