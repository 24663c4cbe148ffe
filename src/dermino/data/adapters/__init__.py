"""Dataset adapters: each turns one published dataset layout into a manifest.

``ADAPTERS[name](root, **opts) -> DataFrame`` (paths relative to ``root``,
``df.attrs['root']`` set, absent images listed in ``df.attrs['missing_images']``).
``DOWNLOADERS[name](out)`` fetches where the licence allows, else prints instructions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from . import fitzpatrick17k, folder, ham10000, isic2017, ph2

ADAPTERS: dict[str, Callable[..., pd.DataFrame]] = {
    "ham10000": ham10000.build_manifest,
    "ph2": ph2.build_manifest,
    "isic2017": isic2017.build_manifest,
    "fitzpatrick17k": fitzpatrick17k.build_manifest,
    "folder": folder.build_manifest,
}

DOWNLOADERS: dict[str, Callable[[Path], None]] = {
    "ham10000": ham10000.download,
    "ph2": ph2.download,
    "isic2017": isic2017.download,
    "fitzpatrick17k": fitzpatrick17k.download,
}

def build(name: str, root: str | Path, **opts) -> pd.DataFrame:
    """``ADAPTERS[name](Path(root), **opts)`` with a clear error for an unknown name."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown dataset '{name}'; known: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name](Path(root), **opts)
