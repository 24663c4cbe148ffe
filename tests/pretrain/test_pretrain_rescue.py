"""Diverged runs can be rescued, and a resume never silently continues a different recipe."""

from __future__ import annotations

import logging
import re

import pandas as pd
import pytest

from dermino.cli import main
from dermino.config import save_config
from dermino.data.sample import sample_manifests
from dermino.pretrain.checkpoint import list_checkpoints, load_checkpoint
from dermino.pretrain.config import tiny_config
from dermino.pretrain.model import StudentTeacher


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("rescue")
    cfg = tiny_config(str(out / "unused"))
    cfg.data.manifests = [str(p) for k, p in sample_manifests(out / "manifests").items() if k == "ph2"]
    cfg.schedule.budget_steps = 6
    cfg.run.checkpoint_every = 1
    cfg.run.keep_checkpoints = 2
    cfg.run.max_bad_steps = 3
    save_config(cfg, out / "tiny.yaml")
    return out / "tiny.yaml"


def _poison_from(monkeypatch, first_bad_call: int) -> None:
    """Every compute_loss call from the ``first_bad_call``-th on returns a NaN loss (one call per step here)."""
    orig = StudentTeacher.compute_loss
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= first_bad_call:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(StudentTeacher, "compute_loss", poisoned)


def test_nan_streak_keeps_last_good_checkpoint_then_rescue(tmp_path, config_file, monkeypatch, capsys, caplog):
    out = tmp_path / "run"
    _poison_from(monkeypatch, 3)  # steps 1-2 good, 3, 4, 5 non-finite -> gives up at step 5
    with caplog.at_level(logging.WARNING, logger="dermino.pretrain.trainer"):
        rc = main(["pretrain", "--config", str(config_file), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    good = out / "checkpoints" / "step_00000002.pt"
    assert str(good) in err and "--resume-from" in err and "optim.base_lr=" in err
    # the two rolling checkpoints kept going during the streak; the last good one is kept in addition
    names = [p.name for p in list_checkpoints(out / "checkpoints")]
    assert names == ["step_00000002.pt", "step_00000003.pt", "step_00000004.pt"]
    assert load_checkpoint(good)["bad_steps"] == 0
    # log and metrics.csv number the skipped steps the same way
    logged = [int(m.group(1)) for r in caplog.records if (m := re.match(r"step (\d+): non-finite", r.getMessage()))]
    csv = pd.read_csv(out / "metrics.csv")
    assert logged == [3, 4, 5]
    assert csv.loc[csv["skipped"] == 1, "step"].tolist() == [3, 4]  # step 5 raised before its row

    # the rescue: exactly the printed command (without the poison)
    monkeypatch.undo()
    cmd = re.search(r"`dermino (.*)`", err).group(1).split()
    assert main(cmd) == 0
    assert [p.name for p in list_checkpoints(out / "checkpoints")][-1] == "step_00000006.pt"
    diverged = sorted(p.name for p in (out / "checkpoints" / "diverged").iterdir())
    assert diverged == ["step_00000003.pt", "step_00000004.pt"]  # set aside, not lost
    csv = pd.read_csv(out / "metrics.csv")
    assert csv["step"].tolist() == [1, 2, 3, 4, 5, 6] and csv["skipped"].sum() == 0
    final = load_checkpoint(out / "checkpoints" / "step_00000006.pt")
    assert final["config"]["optim"]["base_lr"] < 2e-3
    assert (out / "config.before_step_2.yaml").is_file()


def test_resume_refuses_changed_config_unless_allowed(tmp_path, config_file, capsys):
    out = tmp_path / "run"
    base = ["pretrain", "--config", str(config_file), "--out", str(out)]
    assert main([*base, "schedule.budget_steps=2"]) == 0
    saved = (out / "config.yaml").read_text()
    # overrides after --resume parse as before it; a changed batch size is refused, naming the keys
    assert main([*base, "--resume", "schedule.budget_steps=2", "schedule.batch_size=2"]) == 2
    err = capsys.readouterr().err
    assert "schedule.batch_size" in err and "--allow-config-change" in err
    assert "schedule.budget_steps" not in err.split("refusing")[1].split("--allow")[0]
    assert (out / "config.yaml").read_text() == saved  # nothing overwritten
    # safe keys (logging cadence) need no permission; a longer budget does
    assert main([*base, "--resume", "schedule.budget_steps=3", "run.log_every=5"]) == 2
    assert "schedule.budget_steps: 2 -> 3" in capsys.readouterr().err
    assert main([*base, "--resume", "--allow-config-change", "schedule.budget_steps", "schedule.budget_steps=3"]) == 0
    assert list_checkpoints(out / "checkpoints")[-1].name == "step_00000003.pt"
    assert "budget_steps: 3" in (out / "config.yaml").read_text()


def test_resume_with_allowed_architecture_change_is_one_clear_error(tmp_path, config_file, capsys):
    out = tmp_path / "run"
    base = ["pretrain", "--config", str(config_file), "--out", str(out)]
    assert main([*base, "schedule.budget_steps=1"]) == 0
    rc = main([*base, "--resume", "--allow-config-change", "model.depth", "schedule.budget_steps",
               "model.depth=3", "schedule.budget_steps=2"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit this model" in err and len(err.splitlines()) == 1


def test_allowed_batch_size_change_keeps_the_image_counter(tmp_path, config_file):
    """The image and epoch columns count what was consumed, not step x the current batch."""
    out = tmp_path / "run"
    base = ["pretrain", "--config", str(config_file), "--out", str(out), "run.log_every=1"]
    assert main([*base, "schedule.budget_steps=2", "schedule.batch_size=4"]) == 0
    assert main([*base, "--resume", "--allow-config-change", "schedule.budget_steps", "schedule.batch_size",
                 "schedule.budget_steps=3", "schedule.batch_size=2"]) == 0
    csv = pd.read_csv(out / "metrics.csv")
    assert csv["step"].tolist() == [1, 2, 3]
    assert csv["images"].tolist() == [4, 8, 10]  # step x new batch would log 6 at step 3
    assert csv["epoch"].is_monotonic_increasing
    assert load_checkpoint(out / "checkpoints" / "step_00000003.pt")["images_seen"] == 10


def test_a_spike_before_the_nans_moves_the_rescue_point_back_and_the_rescue_trains_on(
        tmp_path, config_file, monkeypatch, capsys, caplog):
    """Step 3's loss is finite but 1e4 x its level (the spike that precedes a divergence), NaN from
    step 4: the rescue point is step 2, not step 3 (finite loss, unhealthy), and the printed
    command trains on from it."""
    out = tmp_path / "run"
    orig = StudentTeacher.compute_loss
    calls = {"n": 0}

    def spiking(self, *args, **kwargs):
        res = orig(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            res.loss = res.loss * 1e4
        elif calls["n"] >= 4:
            res.loss = res.loss * float("nan")
        return res

    monkeypatch.setattr(StudentTeacher, "compute_loss", spiking)
    with caplog.at_level(logging.WARNING, logger="dermino.pretrain.trainer"):
        rc = main(["pretrain", "--config", str(config_file), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    good = out / "checkpoints" / "step_00000002.pt"
    assert f"last good checkpoint: {good} " in err, err
    assert "not a rescue point" in caplog.text and "running median" in caplog.text
    assert load_checkpoint(good)["healthy"] is True
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [
        "step_00000002.pt", "step_00000004.pt", "step_00000005.pt"]  # step 3 pruned, the rescue point kept
    assert load_checkpoint(out / "checkpoints" / "step_00000004.pt")["healthy"] is False
    monkeypatch.undo()
    cmd = re.search(r"`dermino (.*)`", err).group(1).split()
    assert main(cmd) == 0
    csv = pd.read_csv(out / "metrics.csv")
    assert csv["step"].tolist() == [1, 2, 3, 4, 5, 6] and csv["skipped"].sum() == 0
    assert csv["loss"].abs().max() < 1e3  # the spike's row is gone with the branch it started
