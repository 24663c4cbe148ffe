"""Resolution stages: the crop sizes change at the right step, and a run resumed at the boundary
ends exactly where the uninterrupted run does."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from dermino.config import ConfigError, check_config
from dermino.pretrain.builders import stage_at
from dermino.pretrain.checkpoint import latest_checkpoint
from dermino.pretrain.config import StageConfig, tiny_config
from dermino.pretrain.model import StudentTeacher
from dermino.pretrain.trainer import pretrain

STEPS = 6


def _cfg(out, manifests):
    cfg = tiny_config(str(out))
    cfg.data.manifests = manifests
    cfg.schedule.budget_steps = STEPS
    cfg.schedule.stages = [StageConfig(start=0.5, global_size=84, local_size=42)]  # from step 3 on
    cfg.run.checkpoint_every = 1
    cfg.run.keep_checkpoints = STEPS
    return cfg


def test_stage_at_picks_the_crops_of_each_step(tmp_path):
    cfg = tiny_config(str(tmp_path))
    cfg.schedule.stages = [StageConfig(start=0.5, global_size=84, local_size=42),
                           StageConfig(start=0.75, global_size=112, local_size=56)]
    sizes = [(i, c.global_size, c.local_size) for i, c in (stage_at(cfg, s, 8) for s in range(8))]
    assert sizes == [(0, 56, 28)] * 4 + [(1, 84, 42)] * 2 + [(2, 112, 56)] * 2
    cfg.schedule.stages = [StageConfig(start=0.5, global_size=80, local_size=42)]
    with pytest.raises(ConfigError, match="multiple of crops.patch_size"):
        check_config(cfg)
    cfg.schedule.stages = [StageConfig(start=0.7), StageConfig(start=0.5)]
    with pytest.raises(ConfigError, match="increasing order"):
        check_config(cfg)


def test_crops_grow_at_the_boundary_and_resume_there_is_exact(tmp_path, manifests, monkeypatch):
    seen: list[int] = []
    original = StudentTeacher.compute_loss

    def recording(self, batch, *args, **kwargs):
        seen.append(int(batch["global_crops"].shape[-1]))
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(StudentTeacher, "compute_loss", recording)
    ref = pretrain(_cfg(tmp_path / "ref", manifests))
    assert seen == [56, 56, 56, 84, 84, 84]
    assert len(pd.read_csv(ref / "metrics.csv")) == STEPS

    # a run stopped right at the boundary (its last checkpoint: step 3) and resumed
    resumed = tmp_path / "resumed" / "checkpoints"
    resumed.mkdir(parents=True)
    shutil.copy(ref / "checkpoints" / "step_00000003.pt", resumed)
    seen.clear()
    pretrain(_cfg(tmp_path / "resumed", manifests), resume=True)
    assert seen == [84, 84, 84]
    a = torch.load(latest_checkpoint(ref / "checkpoints"), weights_only=True)
    b = torch.load(latest_checkpoint(resumed), weights_only=True)
    assert a["step"] == b["step"] == STEPS and a["data_state"] == b["data_state"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
