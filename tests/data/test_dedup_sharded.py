"""De-duplication shared out across torchrun processes writes the single-process report, byte for byte."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from _torchrun import UnsharedRank, failure, run_torchrun
from dermino.cli import main
from dermino.data import dedup
from dermino.data.manifest import read_manifest, write_manifest


def _planted(corpus: Path, out: Path) -> Path:
    """An evaluation manifest of an exact, a resized and a recompressed copy of real corpus images."""
    ham = read_manifest(corpus)
    out.mkdir()
    rows = []
    for k, kind in enumerate(("exact", "resized", "recompressed")):
        src = Path(ham.attrs["root"]) / ham.image.iat[20 * k]
        dst = out / f"copy{k}_{kind}.jpg"
        im = Image.open(src).convert("RGB")
        if kind == "exact":
            shutil.copyfile(src, dst)
        elif kind == "resized":
            im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.BICUBIC).save(dst, "JPEG", quality=80)
        else:
            im.save(dst, "JPEG", quality=60)
        rows.append({"image": dst.name, "source": "planted", "split": "test", "labels": "", "label_space": ""})
    df = pd.DataFrame(rows)
    df.attrs["root"] = str(out)
    return write_manifest(df, out / "planted.csv")


def _files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


@pytest.mark.slow  # starts torchrun and 2 processes that import torch
def test_two_processes_write_the_single_process_report(bundled_manifests, tmp_path):
    planted = _planted(bundled_manifests["ham10000"], tmp_path / "planted")
    cache = tmp_path / "cache"

    def argv(out: Path) -> list[str]:  # small hash chunks: several for each rank
        return ["data", "dedup", str(bundled_manifests["ham10000"]), str(bundled_manifests["ph2"]),
                "--against", str(planted), "--out", str(out), "--cache-dir", str(cache), "--chunk-size", "40"]

    res = run_torchrun(2, argv(tmp_path / "two"))
    assert res.returncode == 0, failure(res)
    assert res.stdout.count("exact and") == 1  # rank 0 reports, rank 1 is quiet
    assert len(list((cache / "hashes").glob("*.parquet"))) > 2
    shutil.rmtree(cache)  # the single-process run computes everything again, under the same settings
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv(tmp_path / "one")) == 0
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert one.keys() == two.keys() and {"summary.json", "pairs.csv", "report.html", "ham10000.dedup.csv"} <= one.keys()
    for name in one:
        assert one[name] == two[name], name
    pairs = pd.read_csv(tmp_path / "two" / "pairs.csv")
    assert {"exact", "near"} <= set(pairs.kind)  # the planted copies were found, so descriptors were compared


def test_descriptor_batches_split_across_ranks(bundled_manifests, tmp_path):
    """Rank 1 describes the odd batches and returns nothing; rank 0 the even ones and gathers the
    array that one process makes with the same batches."""
    df = read_manifest(bundled_manifests["ph2"]).head(7)
    paths = [Path(df.attrs["root"]) / v for v in df.image]
    assert dedup._describe_shared(paths, dedup.detail_embedder, tmp_path, UnsharedRank(rank=1, world_size=2),
                                  False, batch=2) is None
    (folder,) = (tmp_path / "descriptors").iterdir()
    assert sorted(f.name for f in folder.iterdir()) == ["batch_00001.npy", "batch_00003.npy"]
    both = dedup._describe_shared(paths, dedup.detail_embedder, tmp_path, UnsharedRank(rank=0, world_size=2),
                                  False, batch=2)
    alone = dedup._describe(paths, dedup.detail_embedder, tmp_path / "alone", False, batch=2)
    assert both.dtype == np.float16 and both.shape == (7, 3, 48 * 48)
    assert np.array_equal(np.asarray(both), np.asarray(alone))


def test_an_embedder_without_identity_cannot_be_shared(tmp_path):
    def anonymous(paths):
        return np.zeros((len(paths), 2), np.float32)

    with pytest.raises(ValueError, match="identity"):
        dedup._describe_shared([tmp_path / "x.jpg"], anonymous, tmp_path, UnsharedRank(rank=0, world_size=2), False)


def test_backbone_descriptors_are_named_by_the_weights(tmp_path):
    """Under torchrun the ranks compare this identity before describing: two random initialisations
    differ (the job stops instead of mixing descriptors), one weights file gives one name."""
    import torch
    from safetensors.torch import save_file

    from dermino.features.embedder import backbone_embedder
    from dermino.models import create

    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in create("dermino_vit_tiny_14").state_dict().items()}, str(weights))
    a, b = (backbone_embedder("dermino_vit_tiny_14", str(weights)) for _ in range(2))
    assert a.identity() == b.identity() and "dermino_vit_tiny_14" in a.identity()
    torch.manual_seed(1)
    r1 = backbone_embedder("dermino_vit_tiny_14")
    torch.manual_seed(2)
    assert backbone_embedder("dermino_vit_tiny_14").identity() != r1.identity()
