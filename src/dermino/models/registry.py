"""The backbone registry: names -> constructors. A leaf module that imports no model.

As in timm, model modules register themselves when imported (``@register("name")``) and the
package ``dermino.models`` imports them all, so ``dermino.models.create`` (models/factory.py)
sees every name. Keeping the table here, apart from any model, is what lets backbone.py,
baselines/, weights.py and factory.py import each other in one direction only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BackboneFactory = Callable[..., Any]

_REGISTRY: dict[str, BackboneFactory] = {}
_TINY_OVERRIDES: dict[str, dict] = {}
_PREFIXES: dict[str, Callable[..., Any]] = {}


def register(name: str, tiny: dict | None = None) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make a backbone constructor available to ``create(name)``.

    ``tiny`` are overrides that make the model small enough for a CPU smoke test (the
    registry test builds every registered name with them); None means "build as is".
    """

    def deco(fn: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = fn
        _TINY_OVERRIDES[name] = dict(tiny or {})
        return fn

    return deco


def register_prefix(prefix: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for open families: ``create("timm:vit_small_patch16_224")`` calls ``fn(rest, **kw)``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _PREFIXES[prefix] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    """Concrete registered names (open families such as ``timm:<name>`` are in list_prefixes)."""
    return sorted(_REGISTRY)


def list_prefixes() -> list[str]:
    return sorted(_PREFIXES)


def tiny_overrides(name: str) -> dict:
    """Overrides that build ``name`` at test size (see ``register``)."""
    return dict(_TINY_OVERRIDES.get(name, {}))


def lookup(name: str) -> BackboneFactory:
    """The constructor of ``name`` (``prefix:rest`` names get ``rest`` bound); KeyError lists the choices."""
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _PREFIXES:
        fn = _PREFIXES[prefix]
        return lambda **kw: fn(rest, **kw)
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise KeyError(
        f"unknown backbone {name!r}; available: {', '.join(list_backbones())}; "
        f"or one of the families {', '.join(p + ':<name>' for p in list_prefixes())}"
    )
