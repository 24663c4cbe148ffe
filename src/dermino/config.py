"""Dataclass configs loaded from YAML and overridden from the command line.

Every job (pretrain, evaluate, segment, demo) describes its settings as a tree of
dataclasses. A YAML file fills the tree, then ``key.sub=value`` overrides from the CLI
patch it. Unknown keys are an error, so a typo in a config never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not fit the dataclass it should fill."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn a YAML value into the annotated type (nested dataclasses included)."""
    if value is None:
        return None
    tp = _unwrap_optional(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            value = [value]
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
            return value.lower() in {"true", "yes", "1"}
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float and isinstance(value, int | float | str):
        try:
            return float(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from exc
    if tp is int and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from exc
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (for JSON results and saved run configs)."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Apply ``a.b.c=value`` strings; values are parsed as YAML (``1e-3``, ``[1,2]``, ``true``)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        parts = key.strip().split(".")
        target: Any = cfg
        for i, part in enumerate(parts[:-1]):
            if isinstance(target, dict):
                # free-form mapping field (e.g. backbone overrides): create sub-maps on demand
                target = target.setdefault(part, {})
                continue
            if not dataclasses.is_dataclass(target) or not hasattr(target, part):
                raise ConfigError(f"override {item!r}: no section {'.'.join(parts[: i + 1])!r}")
            target = getattr(target, part)
        leaf = parts[-1]
        if isinstance(target, dict):
            target[leaf] = value
            continue
        if not dataclasses.is_dataclass(target) or leaf not in {f.name for f in dataclasses.fields(target)}:
            raise ConfigError(f"override {item!r}: unknown key {leaf!r}")
        tp = _field_types(type(target))[leaf]
        setattr(target, leaf, _coerce(value, tp, key))
    return cfg


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file (if any), then CLI overrides."""
    if path is None:
        cfg = cls()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        cfg = from_dict(cls, data, where=str(path))
    return apply_overrides(cfg, overrides)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
