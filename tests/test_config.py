"""Dataclass configs: YAML loading, dotted overrides, and clear errors for typos."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from dermino.config import ConfigError, apply_overrides, load_config


@dataclass
class Inner:
    lr: float = 1e-3
    sizes: list[int] = field(default_factory=lambda: [224])
    enabled: bool = True


@dataclass
class Outer:
    name: str = "run"
    steps: int = 10
    weights: str | None = None
    inner: Inner = field(default_factory=Inner)
    extra: dict = field(default_factory=dict)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ninner:\n  lr: 0.01\n  sizes: [98, 224]\n")
    cfg = load_config(Outer, path, ["inner.lr=2e-3", "steps=5", "inner.enabled=false", "weights=w.pt"])
    assert cfg.name == "a" and cfg.steps == 5 and cfg.weights == "w.pt"
    assert cfg.inner.lr == pytest.approx(2e-3) and cfg.inner.sizes == [98, 224] and cfg.inner.enabled is False


def test_overrides_reach_into_mapping_fields():
    cfg = apply_overrides(Outer(), ["extra.depth=2", "extra.sub.width=64"])
    assert cfg.extra == {"depth": 2, "sub": {"width": 64}}


@pytest.mark.parametrize(
    "override, message",
    [("inner.lrr=1", "unknown key 'lrr'"), ("nope.lr=1", "no section 'nope'"), ("steps=ten", "integer"),
     ("inner.enabled=maybe", "true/false"), ("steps", "key.sub=value")],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Outer(), [override])


def test_unknown_yaml_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
