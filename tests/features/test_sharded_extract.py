"""Embedding shared out across torchrun processes gives the single-process array bit for bit,
and a job with a killed rank resumes without redoing a finished chunk."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from _torchrun import KILL_AFTER_FIRST_CHUNK, UnsharedRank, failure, printed_json, run_torchrun
from dermino.cli import main
from dermino.data.manifest import read_manifest
from dermino.features import EmbedConfig, extract_embeddings
from dermino.models import create
from dermino.sharding import Shard, torchrun_shard

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2, "img_size": 28, "layerscale_init": 1.0}
CHUNK = 8  # 60 PH2 images: 8 chunks, the last one short


@pytest.fixture(scope="module")
def setup(tmp_path_factory, bundled_manifests):
    """A tiny ViT saved to a weights file (every rank must load the same model) and the PH2 sample."""
    tmp = tmp_path_factory.mktemp("sharded_embed")
    torch.manual_seed(0)
    weights = tmp / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in create("dermino_vit_tiny_14", **TINY).state_dict().items()},
              str(weights))
    return tmp, weights, bundled_manifests["ph2"]


def _argv(setup, out) -> list[str]:
    _, weights, manifest = setup
    return ["embed", "--backbone", "dermino_vit_tiny_14", "--weights", str(weights), "--manifest", str(manifest),
            "--model-arg", *[f"{k}={v}" for k, v in TINY.items()], "--out", str(out),
            "--set", "image_size=28", "batch_size=3", f"chunk_size={CHUNK}"]


@pytest.fixture(scope="module")
def single(setup):
    """The single-process run, in this process with one thread like each torchrun rank."""
    tmp = setup[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            assert main(_argv(setup, tmp / "one" / "features.npy")) == 0
    finally:
        torch.set_num_threads(threads)
    out = tmp / "one" / "features.npy"
    return out, printed_json(buf.getvalue())


def _chunks(out) -> dict[str, bytes]:
    (folder,) = (out.parent / "cache" / "embeddings").iterdir()
    return {f.name: f.read_bytes() for f in sorted(folder.glob("chunk_*.npy"))}


@pytest.mark.slow  # starts torchrun and 2 processes that import torch (about 40 s on a busy 2-core machine)
def test_two_processes_write_the_single_process_array(setup, single, tmp_path):
    ref_out, ref = single
    out = tmp_path / "features.npy"
    res = run_torchrun(2, _argv(setup, out))
    assert res.returncode == 0, failure(res)
    printed = printed_json(res.stdout)
    assert res.stdout.count('"key"') == 1  # one summary: rank 1 prints nothing
    assert printed["processes"] == 2 and printed["key"] == ref["key"]
    assert printed["rows"] == ref["rows"] == 60 and printed["computed_rows"] == 60
    assert out.read_bytes() == ref_out.read_bytes()
    assert _chunks(out) == _chunks(ref_out) and len(_chunks(out)) == 8


@pytest.mark.slow  # two torchrun launches of 3 processes
def test_a_killed_rank_resumes_without_redoing_finished_chunks(setup, single, tmp_path):
    ref_out, _ = single
    out = tmp_path / "features.npy"
    killed = run_torchrun(3, _argv(setup, out), script=KILL_AFTER_FIRST_CHUNK, env={"DERMINO_TEST_KILL_RANK": "1"})
    assert killed.returncode != 0, failure(killed)
    assert not out.exists()
    (folder,) = (tmp_path / "cache" / "embeddings").iterdir()
    done = {f.name: f.stat().st_mtime_ns for f in folder.glob("chunk_*.npy")}
    # rank 1 owns chunks 1, 4, 7 and died right after writing chunk 1
    assert "chunk_00001.npy" in done and "chunk_00004.npy" not in done and "chunk_00007.npy" not in done
    done_rows = sum(len(np.load(folder / name)) for name in done)

    res = run_torchrun(3, _argv(setup, out))
    assert res.returncode == 0, failure(res)
    assert printed_json(res.stdout)["computed_rows"] == 60 - done_rows > 0
    assert {name: (folder / name).stat().st_mtime_ns for name in done} == done  # not rewritten
    assert out.read_bytes() == ref_out.read_bytes()


def test_ranks_compute_only_their_chunks_and_need_the_others_files(bundled_manifests, tmp_path):
    """In one process: rank 1 computes the odd chunks and then misses the even ones (a clear error,
    not a wrong array); rank 0 then computes only the even ones and assembles the whole array."""
    torch.manual_seed(0)
    model = create("dermino_vit_tiny_14", **TINY)
    df = read_manifest(bundled_manifests["ph2"]).head(20)
    cfg = EmbedConfig(image_size=28, batch_size=3, chunk_size=4, cache_dir=str(tmp_path / "shared"))
    with pytest.raises(RuntimeError, match="filesystem every node sees"):
        extract_embeddings(model, df, cfg, progress=False, shard=UnsharedRank(rank=1, world_size=2))
    (folder,) = (tmp_path / "shared").iterdir()
    assert sorted(f.name for f in folder.glob("chunk_*.npy")) == ["chunk_00001.npy", "chunk_00003.npy"]
    both = extract_embeddings(model, df, cfg, progress=False, shard=UnsharedRank(rank=0, world_size=2))
    assert both.computed_rows == 12  # chunks 0, 2, 4
    alone = extract_embeddings(model, df, EmbedConfig(image_size=28, batch_size=3, chunk_size=4,
                                                      cache_dir=str(tmp_path / "alone")), progress=False)
    assert both.key == alone.key and np.array_equal(both.features, alone.features)


def test_without_torchrun_one_process_owns_everything(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with torchrun_shard() as shard:
        assert shard == Shard() and not shard.enabled and shard.is_main
        assert all(shard.owns(c) for c in range(5)) and shard.total(7) == 7
        assert shard.device("cuda:0") == "cuda:0"  # left as configured
        assert not torch.distributed.is_initialized()
    three = [Shard(rank=r, world_size=3) for r in range(3)]
    assert [[c for c in range(8) if s.owns(c)] for s in three] == [[0, 3, 6], [1, 4, 7], [2, 5]]
