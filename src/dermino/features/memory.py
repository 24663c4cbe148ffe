"""The in-memory tier above the on-disk feature cache: one process-wide store per kind of thing.

A process that serves many partitions of the same images (a federated simulation, a
benchmark splitting one manifest several ways) keeps what it computed once (the frozen
backbone, each image's pooled feature, the tokens entering a block) here instead of in
module-level dicts of its own, so every caller shares one place, one key rule and one reset.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class MemoryTier:
    """Named stores (``backbones``, ``features``, ``tokens`` ...), each a dict keyed by the caller."""

    def __init__(self) -> None:
        self._stores: dict[str, dict[Hashable, Any]] = {}

    def store(self, name: str) -> dict[Hashable, Any]:
        """The store ``name`` (created empty on first use)."""
        return self._stores.setdefault(name, {})

    def get_or_compute(self, name: str, key: Hashable, compute: Callable[[], T]) -> T:
        """The value under ``key`` in store ``name``, computed once per process."""
        store = self.store(name)
        if key not in store:
            store[key] = compute()
        return store[key]

    def bank(self, name: str, key: Hashable) -> dict[str, Any]:
        """A per-image map (image path -> array) for one (backbone, transform) ``key``."""
        return self.get_or_compute(name, key, dict)

    def clear(self, name: str | None = None) -> None:
        """Forget one store, or everything (tests, or a process that switches backbone)."""
        if name is None:
            self._stores.clear()
        else:
            self._stores.pop(name, None)


_TIER = MemoryTier()


def memory_tier() -> MemoryTier:
    """The process-wide tier."""
    return _TIER
