"""Each builder of a pretraining run works alone, and a training step runs on its parts without a Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermino.pretrain.builders import (
    build_budget,
    build_data,
    build_model,
    build_optimizer,
    build_schedules,
    check_global_batch,
)
from dermino.pretrain.config import tiny_config
from dermino.pretrain.distributed import DistInfo
from dermino.pretrain.fast_step import TrainStep
from dermino.pretrain.state import LoopState, StepParts
from dermino.pretrain.trainer import Trainer
from dermino.runtime import seed_everything


def _cfg(tmp_path, manifests):
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.data.manifests = manifests
    return cfg


def test_budget_from_images_or_steps(tmp_path):
    cfg = tiny_config(str(tmp_path))
    cfg.schedule.budget_steps, cfg.schedule.budget_images = None, 100
    assert build_budget(cfg, global_batch=8, epoch_size=50) == (13, 6)  # ceil(100/8), 50 // 8
    cfg.schedule.budget_steps = 7
    assert build_budget(cfg, global_batch=8, epoch_size=5) == (7, 1)  # at least one step an epoch


def test_global_batch_must_match_processes_and_accumulation(tmp_path):
    cfg = tiny_config(str(tmp_path))
    cfg.schedule.batch_size, cfg.schedule.grad_accum, cfg.schedule.global_batch = 4, 2, 16
    check_global_batch(cfg, world=2)
    with pytest.raises(ValueError, match="global_batch=16"):
        check_global_batch(cfg, world=1)


def test_schedules_prepend_the_head_warmup(tmp_path):
    cfg = tiny_config(str(tmp_path))
    cfg.schedule.head_warmup_images = 8  # 2 steps of 4 images on the frozen backbone
    cfg.model.init_weights = None
    backbone = torch.nn.Linear(2, 2)
    s = build_schedules(cfg, backbone, total_steps=10, global_batch=4, epoch_size=40, steps_per_epoch=10)
    assert s.warmup.steps == 2 and all(len(a) == 10 for a in (s.lr, s.wd, s.momentum, s.teacher_temp))
    assert s.lr[0] == 0.0 and s.lr[1] > 0  # the warm-up ramps the heads' lr
    assert s.wd[0] == s.wd[1] == pytest.approx(cfg.optim.weight_decay)  # held during the warm-up, then the cosine
    assert s.wd[-1] > s.wd[2]
    assert s.freeze_last_layer_steps == int(cfg.optim.freeze_last_layer_epochs * 10)


def test_data_and_model_and_optimizer_alone(tmp_path, manifests):
    cfg = _cfg(tmp_path, manifests)
    info = DistInfo(device=torch.device("cpu"))
    seed_everything(0)
    data = build_data(cfg, info, tmp_path)
    assert data.global_batch == cfg.schedule.batch_size and data.epoch_size == len(data.df)
    assert data.classes and data.prototypes is not None and data.knowledge_summary["rows"] == len(data.df)
    batch = next(iter(data.loader))
    assert batch["global_crops"].shape[-1] == cfg.crops.global_size
    model = build_model(cfg, info, data.prototypes, data.class_prior)
    assert model.student is model.model.student and not model.fsdp  # no process group: nothing wrapped
    opt = build_optimizer(cfg, model.model, info.device)
    assert opt.amp_dtype is None and not opt.scaler.is_enabled()  # tiny_config runs fp32
    assert {id(p) for p in opt.params} == {id(p) for g in opt.optimizer.param_groups for p in g["params"]}
    assert 0 < len(opt.last_layer_params) < len(opt.params)


def test_a_step_runs_on_parts_and_state_and_matches_the_trainers(tmp_path, manifests):
    """The step reads StepParts and advances a LoopState; driven alone, it does what the trainer's does."""
    a = Trainer(_cfg(tmp_path / "a", manifests))
    b = Trainer(_cfg(tmp_path / "b", manifests))
    batch = next(a.batches())
    parts, state = b.step_parts(), LoopState()
    assert isinstance(parts, StepParts)
    step = TrainStep(parts, state, sync_free=False)
    torch.manual_seed(1)  # the same drop-path noise for both
    out_b = step.read(step([batch]))
    torch.manual_seed(1)
    out_a = a.train_step([batch])
    assert state.step == 1 and b.step == 0  # the separate state advanced, the trainer's did not
    assert out_a["loss"] == pytest.approx(out_b["loss"], rel=1e-6)
    for p, q in zip(a.model.student.parameters(), b.model.student.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    assert np.isfinite(out_b["grad_norm"])
