"""Gram anchoring inside pretraining: the term is logged from its start step, the Gram teacher is a
frozen snapshot refreshed on schedule, kept in checkpoints, and high-resolution targets run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from dermino.config import ConfigError, check_config
from dermino.pretrain.config import tiny_config
from dermino.pretrain.trainer import Trainer, pretrain


def _cfg(tmp_path, manifests, **gram):
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.data.manifests = manifests
    cfg.losses.gram.enabled = True
    for k, v in gram.items():
        setattr(cfg.losses.gram, k, v)
    return cfg


def test_gram_term_counts_from_its_start_step_and_is_in_metrics(tmp_path, manifests):
    out = pretrain(_cfg(tmp_path, manifests, start_step=2, weight=1.0))
    m = pd.read_csv(out / "metrics.csv")
    assert "gram" in m.columns
    assert (m.loc[m["step"] <= 2, "gram"] == 0).all()  # steps 1-2 ran before start_step=2 took effect
    assert (m.loc[m["step"] > 2, "gram"] > 0).all()


def test_snapshot_is_frozen_refreshed_and_checkpointed(tmp_path, manifests):
    t = Trainer(_cfg(tmp_path, manifests, refresh_every=2))
    g = t.model.gram_teacher
    assert g is not None and not any(p.requires_grad for p in g.parameters())
    start = [p.clone() for p in g.parameters()]
    stream = t.batches()
    t.train_step([next(stream)])
    t.train_step([next(stream)])  # the teacher moved, the snapshot did not
    assert all(torch.equal(a, b) for a, b in zip(start, g.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(start, t.model.teacher.backbone.parameters(), strict=True))
    t.train_step([next(stream)])  # step index 2: refreshed from the EMA teacher first
    assert not all(torch.equal(a, b) for a, b in zip(start, g.parameters(), strict=True))
    assert any(k.startswith("gram_teacher.") for k in t.state_dict()["model"])


def test_high_resolution_targets_and_config_rules(tmp_path, manifests):
    cfg = _cfg(tmp_path, manifests, target_size=84)  # 56 px student crops, 84 px Gram teacher (6x6 grid -> 4x4)
    t = Trainer(cfg)
    row = t.train_step([next(t.batches())])
    assert row["gram"] > 0
    bad = tiny_config(str(tmp_path))
    bad.losses.gram.teacher, bad.losses.gram.refresh_every = "initial", 5
    with pytest.raises(ConfigError, match="refresh_every must be 0"):
        check_config(bad)
