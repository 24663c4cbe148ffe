"""Dataset adapters: each turns one published dataset layout into a manifest.

``ADAPTERS[name](root, **opts) -> DataFrame`` (paths relative to ``root``,
``df.attrs['root']`` set, absent images listed in ``df.attrs['missing_images']``).
``DOWNLOADERS[name](out)`` fetches where the licence allows, else prints instructions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from . import (
    acne04,
    ddi,
    derm7pt,
    fitzpatrick17k,
    folder,
    ham10000,
    isic2016,
    isic2017,
    isic2018,
    isic2019,
    isic2020,
    mednode,
    pad_ufes20,
    ph2,
    sd198,
)

ADAPTERS: dict[str, Callable[..., pd.DataFrame]] = {
    "ham10000": ham10000.build_manifest,
    "ph2": ph2.build_manifest,
    "isic2017": isic2017.build_manifest,
    "fitzpatrick17k": fitzpatrick17k.build_manifest,
    "folder": folder.build_manifest,
    "isic2016": isic2016.build_manifest,
    "isic2018": isic2018.build_manifest,
    "isic2019": isic2019.build_manifest,
    "isic2020": isic2020.build_manifest,
    "derm7pt": derm7pt.build_manifest,
    "pad_ufes20": pad_ufes20.build_manifest,
    "ddi": ddi.build_manifest,
    "mednode": mednode.build_manifest,
    "sd198": sd198.build_manifest,
    "acne04": acne04.build_manifest,
}

DOWNLOADERS: dict[str, Callable[[Path], None]] = {
    "ham10000": ham10000.download,
    "ph2": ph2.download,
    "isic2017": isic2017.download,
    "fitzpatrick17k": fitzpatrick17k.download,
    **{m.NAME: m.download for m in (isic2016, isic2018, isic2019, isic2020, derm7pt, pad_ufes20, ddi, mednode,
                                    sd198, acne04)},
}

def build(name: str, root: str | Path, **opts) -> pd.DataFrame:
    """``ADAPTERS[name](Path(root), **opts)`` with a clear error for an unknown name."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown dataset '{name}'; known: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name](Path(root), **opts)
