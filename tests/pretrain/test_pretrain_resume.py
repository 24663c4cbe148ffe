"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed ends with the same
weights (torch.equal) as a run never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from dermino.config import save_config
from dermino.data.sample import sample_manifests
from dermino.pretrain.checkpoint import latest_checkpoint, list_checkpoints, save_atomic
from dermino.pretrain.config import tiny_config

STEPS = 14


def _run(config: Path, out: Path, resume: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dermino.cli", "pretrain", "--config", str(config), "--out", str(out)]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_state(out: Path) -> dict:
    path = latest_checkpoint(out / "checkpoints")
    assert path is not None and path.name == f"step_{STEPS:08d}.pt"
    return torch.load(path, weights_only=False)


def test_kill9_then_resume_matches_uninterrupted_run(tmp_path):
    cfg = tiny_config(str(tmp_path / "unused"))
    cfg.data.manifests = [str(p) for p in sample_manifests(tmp_path / "manifests").values()]
    cfg.data.num_workers = 1  # a worker process too: its RNG must not matter
    cfg.schedule.budget_steps = STEPS
    cfg.run.checkpoint_every = 2
    cfg.run.keep_checkpoints = 3
    config = tmp_path / "tiny.yaml"
    save_config(cfg, config)

    ref = _run(config, tmp_path / "ref")
    killed_dir = tmp_path / "killed"
    victim = _run(config, killed_dir)
    deadline = time.time() + 120
    while not list_checkpoints(killed_dir / "checkpoints") and time.time() < deadline:
        assert victim.poll() is None, victim.stdout.read()
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    first = latest_checkpoint(killed_dir / "checkpoints")
    assert first is not None and first.name != f"step_{STEPS:08d}.pt", "run finished before it was killed"

    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    resumed = _run(config, killed_dir, resume=True)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()

    a, b = _final_state(tmp_path / "ref"), _final_state(killed_dir)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["data_state"] == b["data_state"]
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    steps = pd.read_csv(killed_dir / "metrics.csv")["step"].tolist()
    assert steps == list(range(1, STEPS + 1))  # rows after the checkpoint were replaced, not duplicated


def test_atomic_save_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = save_atomic({"x": torch.ones(2)}, tmp_path / "step_00000001.pt")

    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"x": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path)["x"], torch.ones(2))
    assert list_checkpoints(tmp_path) == [path]  # the .tmp leftover is not a checkpoint
