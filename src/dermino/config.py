"""Dataclass configs loaded from YAML and overridden from the command line.

Every job (pretrain, evaluate, segment, demo) describes its settings as a tree of
dataclasses. A YAML file fills the tree, then ``key.sub=value`` overrides from the CLI
patch it. Unknown keys are an error, so a typo in a config never silently does nothing.

Value checks are declared where the field is, and run once, by :func:`check_config`, when a
config loads: ``base_lr: Annotated[float, Positive] = 2e-3`` or
``precision: Literal["fp32", "bf16", "fp16"] = "bf16"``. A new field gets its check by its
annotation alone (see docs/architecture.md, "Configs"). The type itself is a check too: every
``float`` (alone or in a list/tuple) must be finite (``inf`` passes ``> 0``, and NaN passes no
comparison at all), and an ``int`` or ``float`` field never takes a boolean (YAML's ``yes``).
A check that involves several fields of one config is a :class:`Rule` in the class's ``RULES``
(``min_lr <= base_lr``); it runs in the same pass. Configs built in code rather than loaded call
``cfg.validate()`` (:class:`Checked`), the same checks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dermino.runtime import device_problem

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not fit the dataclass it should fill."""


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric range for ``Annotated[float | int, Range(...)]`` fields (bounds left None are open)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def describe(self) -> str:
        low = f"> {self.gt:g}" if self.gt is not None else f">= {self.ge:g}" if self.ge is not None else ""
        high = f"< {self.lt:g}" if self.lt is not None else f"<= {self.le:g}" if self.le is not None else ""
        return " and ".join(x for x in (low, high) if x)

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None  # the type is checked by coercion, not here
        if not math.isfinite(value):
            return "must be a finite number"
        ok = ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
              and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))
        return None if ok else f"must be {self.describe()}"


@dataclasses.dataclass(frozen=True)
class Device:
    """Marks a device field: ``auto | cpu | cuda | cuda:N | mps``, and it must exist on this machine."""

    def problem(self, value: Any) -> str | None:
        return device_problem(str(value))


@dataclasses.dataclass(frozen=True)
class SubsetOf:
    """A list field whose items must come from ``choices`` (and, with ``nonempty``, at least one)."""

    choices: tuple[str, ...]
    nonempty: bool = True

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple):
            return None  # the type is checked by coercion, not here
        bad = [v for v in value if v not in self.choices]
        if bad or (self.nonempty and not value):
            return f"must be a {'non-empty ' if self.nonempty else ''}list from {', '.join(self.choices)}"
        return None


@dataclasses.dataclass(frozen=True)
class NonEmpty:
    """A string or list field that must not be empty."""

    def problem(self, value: Any) -> str | None:
        return "must not be empty" if isinstance(value, str | list | tuple) and not value else None


@dataclasses.dataclass(frozen=True)
class Rule:
    """A check across the fields of one config, declared on its class:

    ``RULES: ClassVar[tuple[Rule, ...]] = (Rule(lambda c: c.min_lr <= c.base_lr, "min_lr={c.min_lr} must be <= base_lr"),)``

    ``message`` is formatted with the config as ``c``.
    """

    holds: Callable[[Any], bool]
    message: str


class Checked:
    """Mixin for configs also built in code: ``cfg.validate()`` runs the declared checks and rules."""

    def validate(self) -> None:
        check_config(self, type(self).__name__)


@dataclasses.dataclass(frozen=True)
class Each:
    """Apply ``check`` to every item of a list or tuple field (e.g. ``betas``: each in [0, 1))."""

    check: Any

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple):
            return None
        bad = [(i, why) for i, v in enumerate(value) if (why := self.check.problem(v))]
        return None if not bad else "; ".join(f"item {i} {why}" for i, why in bad)


# the usual ranges, by meaning
Positive = Range(gt=0)
NonNegative = Range(ge=0)
AtLeast1 = Range(ge=1)
Probability = Range(ge=0, le=1)
UnitInterval = Range(ge=0, lt=1)  # [0, 1): e.g. Adam's betas


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
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got the boolean {value!r}")
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


def _checks(tp: Any) -> tuple[Any, list[Any]]:
    """(base type, declared checks) of an annotation, through ``Optional`` and ``Annotated``."""
    tp = _unwrap_optional(tp)
    checks: list[Any] = []
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        checks = [m for m in meta if hasattr(m, "problem")]
        tp = _unwrap_optional(base)
    return tp, checks


def _type_problem(tp: Any, value: Any) -> str | None:
    """What the annotated type alone rules out: booleans for numbers, non-finite floats."""
    if tp in (int, float) and isinstance(value, bool):
        return f"must be a{'n integer' if tp is int else ' number'}, not a boolean"
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if typing.get_origin(tp) in (list, tuple) and isinstance(value, list | tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        for i, item in enumerate(value):
            why = _type_problem(_unwrap_optional(args[min(i, len(args) - 1)]) if args else Any, item)
            if why:
                return f"item {i} {why}"
    return None


def config_problems(cfg: Any, where: str = "") -> list[str]:
    """Every declared range / choice / device check that ``cfg`` fails, as ``key=value: why`` lines."""
    problems: list[str] = []
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    for f in dataclasses.fields(cfg):
        key = f"{where}.{f.name}" if where else f.name
        value = getattr(cfg, f.name)
        if value is None:
            continue
        tp, checks = _checks(hints[f.name])
        why = _type_problem(tp, value)
        if why:
            problems.append(f"{key}={value!r}: {why}")
            continue
        if typing.get_origin(tp) is typing.Literal:
            choices = typing.get_args(tp)
            if value not in choices:
                problems.append(f"{key}={value!r}: must be one of {', '.join(map(repr, choices))}")
        for check in checks:
            why = check.problem(value)
            if why:
                problems.append(f"{key}={value!r}: {why}")
        if dataclasses.is_dataclass(value):
            problems += config_problems(value, key)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    problems += config_problems(item, f"{key}[{i}]")
    if not problems:  # rules may read any field, so they run once the fields themselves are sound
        for rule in getattr(type(cfg), "RULES", ()):
            if not rule.holds(cfg):
                problems.append(f"{where or type(cfg).__name__}: {rule.message.format(c=cfg)}")
    return problems


def check_config(cfg: T, source: str = "config") -> T:
    """Raise one :class:`ConfigError` listing every failed check (each names its key and the allowed values)."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(f"invalid {source}:\n  - " + "\n  - ".join(problems))
    return cfg


def set_flags(cfg: T, flags: dict[str, Any]) -> T:
    """Set ``dotted.key -> value`` pairs from named CLI flags, skipping ``None`` (flag not given).

    Unlike :func:`apply_overrides` the value is taken as is: a path or name given with a flag is
    never parsed as YAML (``--out 2024`` stays the string ``"2024"``).
    """
    for key, value in flags.items():
        if value is None:
            continue
        *sections, leaf = key.split(".")
        target: Any = cfg
        for part in sections:
            target = getattr(target, part)
        if not dataclasses.is_dataclass(target) or leaf not in {f.name for f in dataclasses.fields(target)}:
            raise ConfigError(f"flag for {key!r}: {type(target).__name__} has no key {leaf!r}")
        setattr(target, leaf, value)
    return cfg


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (a missing file or another top level is a ConfigError)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                flags: dict[str, Any] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file (if any), then named CLI flags, then ``key=value``
    overrides; then every declared check, so nothing a user types escapes validation."""
    if path is None:
        cfg = cls()
    else:
        path = Path(path)
        cfg = from_dict(cls, read_config_file(path), where=str(path))
    cfg = set_flags(cfg, flags or {})
    return check_config(apply_overrides(cfg, overrides), str(path) if path is not None else cls.__name__)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
