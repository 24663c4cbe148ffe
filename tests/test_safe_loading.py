"""Files we load are data: a crafted pickle in a checkpoint or a shared head must not run code."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from dermino.files import UnsafeFileError, atomic_dir, atomic_path, load_torch, save_atomic
from dermino.pretrain.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dermino.segment.predict import load_run


class _Payload:
    """Unpickling this calls ``os.system`` (the classic pickle exploit)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path, marker):
    with open(path, "wb") as fh:
        pickle.dump({"model": _Payload(marker), "head": _Payload(marker), "config": {}}, fh)


def test_malicious_checkpoint_runs_no_code_and_names_the_file(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoints" / "step_00000002.pt"
    path.parent.mkdir()
    _malicious(path, marker)
    with pytest.raises(UnsafeFileError, match="step_00000002.pt"):
        load_checkpoint(path)
    assert not marker.exists(), "unpickling ran the payload"


def test_malicious_segmentation_head_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    _malicious(tmp_path / "head_best.pt", marker)
    with pytest.raises(UnsafeFileError, match="head_best.pt"):
        load_run(tmp_path)
    assert not marker.exists()


def test_checkpoint_with_rng_state_loads_weights_only(tmp_path):
    """A real checkpoint body (RNG states included) round-trips through the safe loader."""
    torch.manual_seed(3)
    state = {"model": {"w": torch.randn(3)}, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]},
             "config": {"a": {"b": [1, 2]}}, "data_state": (1, 8)}
    path = save_checkpoint(tmp_path, 5, state)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    import random

    import numpy as np

    set_rng_state(loaded["rng"][0])
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(rng_state() | loaded["rng"][0])
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_atomic_path_removes_temp_on_error_and_keeps_old(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    save_atomic({"t": torch.ones(1)}, tmp_path / "t.pt")
    assert torch.equal(load_torch(tmp_path / "t.pt")["t"], torch.ones(1))


def test_atomic_dir_swaps_whole_folders_and_keeps_the_old_one_on_error(tmp_path):
    target = tmp_path / "clf"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("1")
        (tmp / "b.bin").write_bytes(b"x")
    assert sorted(p.name for p in target.iterdir()) == ["a.json", "b.bin"]
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("2")
        raise RuntimeError("killed mid-write")
    assert (target / "a.json").read_text() == "1" and (target / "b.bin").is_file()
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("3")
    assert [p.name for p in target.iterdir()] == ["a.json"]  # replaced as a whole, no stale files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]  # no temporary or old folders left
