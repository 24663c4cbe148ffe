"""The paper-recipe config says what the paper says (batch, budget, learning rate, initialisation)."""

from __future__ import annotations

import math

import pytest

from dermino.config import ConfigError, load_config
from dermino.pretrain.config import PretrainConfig, tiny_config, validate
from dermino.pretrain.schedules import scaled_lr
from dermino.pretrain.trainer import Trainer

RECIPE = "configs/pretrain/dermino_vitb14.yaml"
GPUS = 8


def test_paper_recipe_numbers():
    cfg = load_config(PretrainConfig, RECIPE)
    s = cfg.schedule
    assert s.global_batch == 2048 == s.batch_size * GPUS * s.grad_accum
    assert cfg.data.epoch_size == 432_776
    assert s.budget_images == 100 * 432_776 == 43_277_600  # 43.3 M images, not 125 M
    assert math.ceil(s.budget_images / s.global_batch) == 21_132
    assert scaled_lr(cfg.optim.base_lr, s.global_batch) == pytest.approx(2e-3, rel=1e-6)
    assert cfg.model.arch == "dermino_vit_base_14" and cfg.crops.patch_size == 14
    assert cfg.model.init_weights.endswith("dinov2_vitb14_pretrain.pth")
    assert not cfg.model.init_weights.startswith("/")


def test_recipe_refuses_to_start_without_the_dinov2_weights(tmp_path):
    cfg = load_config(PretrainConfig, RECIPE, [f"model.init_weights={tmp_path / 'dinov2_vitb14_pretrain.pth'}"])
    with pytest.raises(ConfigError, match=r"model.init_weights=.*file not found.*model.init_weights=none"):
        validate(cfg)
    cfg = load_config(PretrainConfig, RECIPE, ["model.init_weights=none"])
    validate(cfg)  # explicit random init is allowed
    assert cfg.model.init_path is None


def test_global_batch_is_checked_against_processes_and_accumulation(tmp_path):
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.schedule.global_batch = 8  # 4 per process x 1 process x 1 accumulation = 4
    cfg.data.manifests = [str(tmp_path / "never_read.csv")]
    with pytest.raises(ValueError, match="global_batch=8 .* = 4: set schedule.grad_accum"):
        Trainer(cfg)
