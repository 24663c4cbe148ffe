"""Config values are range-checked once, when the config loads; each error names the key and the range."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import pytest
import torch

from dermino.cli import main
from dermino.config import (
    AtLeast1,
    Checked,
    ConfigError,
    NonEmpty,
    Positive,
    Probability,
    Range,
    Rule,
    SubsetOf,
    check_config,
    config_problems,
    load_config,
)
from dermino.pretrain.config import PretrainConfig, tiny_config, validate
from dermino.segment.config import SegmentConfig

PRETRAIN_YAML = "configs/pretrain/tiny_cpu.yaml"


@dataclass
class Inner:
    p: Annotated[float, Probability] = 0.5
    n: Annotated[int, AtLeast1] | None = None

@dataclass
class Outer:
    lr: Annotated[float, Positive] = 1.0
    mode: Literal["a", "b"] = "a"
    frac: Annotated[float, Range(gt=0, lt=1)] = 0.5
    inner: Inner = None  # type: ignore[assignment]
    items: list[Inner] = None  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.base_lr=-1e-3", "optim.base_lr=-0.001: must be > 0"),
        ("schedule.budget_steps=0", "schedule.budget_steps=0: must be >= 1"),
        ("losses.dino.teacher_temp=0", "losses.dino.teacher_temp=0.0: must be > 0"),
        ("masking.probability=1.5", "masking.probability=1.5: must be >= 0 and <= 1"),
        ("run.precision=fp8", "run.precision='fp8': must be one of 'fp32', 'bf16', 'fp16'"),
        ("losses.dino.normalisation=softmax", "must be one of 'sinkhorn', 'centering'"),
    ],
)
def test_bad_values_are_refused_at_load_naming_key_and_range(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, PRETRAIN_YAML, [override])
    assert expected in str(err.value) and PRETRAIN_YAML in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_unavailable_device_is_a_config_error_not_a_traceback(capsys):
    rc = main(["pretrain", "--config", PRETRAIN_YAML, "run.device=cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "run.device='cuda'" in err and "no CUDA GPU" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="device='cuda:0'"):
        load_config(SegmentConfig, None, ["manifest=x.csv", "device=cuda:0"])


def test_negative_lr_through_the_cli_is_rc2_before_any_training(tmp_path, capsys):
    rc = main(["pretrain", "--config", PRETRAIN_YAML, "--out", str(tmp_path / "run"), "optim.base_lr=-1e-3"])
    assert rc == 2 and "optim.base_lr" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_programmatic_configs_are_checked_too():
    cfg = tiny_config()
    cfg.optim.base_lr = 0.0
    cfg.run.keep_checkpoints = 0
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "optim.base_lr=0.0: must be > 0" in str(err.value) and "run.keep_checkpoints=0" in str(err.value)


def test_a_new_field_is_checked_by_its_annotation_alone():
    ok = Outer(inner=Inner(), items=[Inner()])
    assert check_config(ok) is ok
    bad = Outer(lr=-1, mode="c", frac=1.0, inner=Inner(p=2.0, n=0), items=[Inner(), Inner(p=-0.1)])
    with pytest.raises(ConfigError) as err:
        check_config(bad)
    msg = str(err.value)
    for part in ("lr=-1: must be > 0", "mode='c'", "frac=1.0: must be > 0 and < 1", "inner.p=2.0",
                 "inner.n=0: must be >= 1", "items[1].p=-0.1"):
        assert part in msg


def test_segment_cli_overrides_are_checked_before_training(tmp_path, capsys):
    """Overrides typed after named flags used to skip the range checks (they were applied after load)."""
    rc = main(["segment", "train", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "run"),
               "epochs=0"])
    assert rc == 2 and "epochs=0: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_flags_are_taken_verbatim_and_overrides_win():
    cfg = load_config(SegmentConfig, None, ["epochs=3"], flags={"out": "2024", "manifest": None, "epochs": 9})
    assert cfg.out == "2024" and cfg.epochs == 3  # a flag value is never parsed as YAML; None = flag not given
    with pytest.raises(ConfigError, match="no key 'nope'"):
        load_config(SegmentConfig, None, flags={"nope": "x"})


@dataclass
class Lists:
    targets: Annotated[list[str], SubsetOf(("qkv", "proj"))] = None  # type: ignore[assignment]
    column: Annotated[str, NonEmpty()] = "source"


def test_list_and_text_checks_name_the_key():
    assert check_config(Lists(targets=["qkv"])).column == "source"
    for bad, expected in ((Lists(targets=["head"]), "targets=['head']: must be a non-empty list from qkv, proj"),
                          (Lists(targets=[]), "targets=[]: must be a non-empty list"),
                          (Lists(targets=["proj"], column=""), "column='': must not be empty")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            check_config(bad)


@dataclass
class Lr(Checked):
    RULES: ClassVar[tuple[Rule, ...]] = (Rule(lambda c: c.min_lr <= c.base_lr, "min_lr={c.min_lr} > base_lr"),)
    base_lr: Annotated[float, Positive] = 1.0
    min_lr: float = 0.1


def test_rules_check_across_fields_and_format_their_message():
    check_config(Lr())
    with pytest.raises(ConfigError, match=r"Lr: min_lr=2.0 > base_lr"):
        Lr(min_lr=2.0).validate()
    # a field that fails its own check is reported alone: rules run on sound fields only
    with pytest.raises(ConfigError) as err:
        check_config(Lr(base_lr=-1.0, min_lr=2.0))
    assert "base_lr=-1.0" in str(err.value) and "min_lr=2.0 >" not in str(err.value)


def test_no_config_validates_by_hand():
    """One validation mechanism: no config class under src/ defines its own ``validate`` method."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "dermino"
    offenders = []
    for path in src.rglob("*.py"):
        if path.name == "config.py" and path.parent == src:
            continue  # the mechanism itself (Checked.validate)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.FunctionDef) and b.name == "validate" for b in node.body):
                offenders.append(f"{path.relative_to(src)}:{node.name}")
    assert not offenders, f"hand-written validate() methods (declare checks on the fields instead): {offenders}"
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.base_lr=inf", "optim.base_lr=inf: must be a finite number"),
        ("optim.base_lr=.nan", "optim.base_lr=nan: must be a finite number"),
        ("losses.dino.weight=.inf", "losses.dino.weight=inf: must be a finite number"),
        ("optim.warmup_epochs=-.inf", "optim.warmup_epochs=-inf: must be a finite number"),
        ("schedule.batch_size=true", "schedule.batch_size: expected a number, got the boolean True"),
        ("optim.clip_grad=yes", "optim.clip_grad: expected a number, got the boolean True"),
        ("optim.betas=[0.9, 1.0]", "optim.betas=(0.9, 1.0): item 1 must be >= 0 and < 1"),
        ("optim.betas=[-0.1, 0.99]", "item 0 must be >= 0 and < 1"),
        ("optim.betas=[0.9, .nan]", "optim.betas=(0.9, nan): item 1 must be a finite number"),
        ("optim.min_lr=0.1", "optim: min_lr=0.1 must be <= base_lr"),
    ],
)
def test_non_finite_bool_betas_and_min_lr_are_refused_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, PRETRAIN_YAML, [override])
    assert expected in str(err.value)


def test_type_checks_hold_for_configs_built_in_code():
    cfg = tiny_config()
    cfg.optim.base_lr = float("inf")
    cfg.schedule.batch_size = True
    cfg.optim.betas = (0.9, 1.5)
    problems = "\n".join(config_problems(cfg))
    assert "optim.base_lr=inf: must be a finite number" in problems
    assert "schedule.batch_size=True: must be an integer, not a boolean" in problems
    assert "optim.betas=(0.9, 1.5): item 1" in problems
    cfg = tiny_config()
    cfg.optim.min_lr = cfg.optim.base_lr * 2
    assert any("min_lr=" in p and "<= base_lr" in p for p in config_problems(cfg))


@pytest.mark.parametrize(("base_lr", "min_lr"), [(float("inf"), 1e-6), (float("nan"), 1e-6), (0.0, 0.0),
                                                 (2e-6, 1e-6), (1e-3, float("nan"))])
def test_rescue_suggests_only_finite_values_the_checks_accept(base_lr, min_lr, tmp_path):
    from dermino.pretrain.rescue import diverged_message

    good = tmp_path / "step_00000004.pt"
    good.write_bytes(b"x")
    msg = diverged_message("loss is NaN", tmp_path, good, base_lr, min_lr)
    overrides = msg.split("--resume-from ")[1].rstrip("`").split()[1:]
    assert overrides and all(o.startswith("optim.") for o in overrides)
    import math

    values = [float(o.split("=", 1)[1]) for o in overrides]  # the suggested numbers themselves
    assert all(math.isfinite(v) and v >= 0 for v in values)
    cfg = load_config(PretrainConfig, PRETRAIN_YAML, overrides)  # the suggested command passes the checks
    assert 0 < cfg.optim.base_lr < 1 and cfg.optim.min_lr <= cfg.optim.base_lr
