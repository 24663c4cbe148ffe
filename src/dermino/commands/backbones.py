"""``dermino backbones``: every registered model, and where its published weights come from.

For each name: family, library, parameters and embedding widths (built once with random
weights, on the ``meta`` device where the library allows, else on the CPU), input
resolution and the rest of its preprocessing, text tower yes/no (and why not), licence,
download page and the sha256 its publisher states. Announced models without public weights
are listed as such.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from typing import Any

import torch

from dermino.models import create, list_backbones
from dermino.models.baselines import CARDS
from dermino.models.text import text_tower


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("backbones", help="list every registered backbone: family, size, preprocessing, "
                                                "text tower, licence, weights to download")
    p.add_argument("names", nargs="*", help="only these names (default: all)")
    p.add_argument("--comparators", action="store_true", help="only the named comparators (models with a card)")
    p.add_argument("--no-build", action="store_true", help="skip building the models (no parameter counts)")
    p.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    p.set_defaults(func=cmd_backbones)


def _measure(name: str) -> dict[str, Any]:
    """Parameters and feature widths of a randomly initialised ``name`` (meta device first)."""
    card = CARDS.get(name)
    size = card.preprocess.image_size if card and card.preprocess else 224
    x = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            try:
                with torch.device("meta"):
                    model = create(name).eval()
                    out = model.forward_features(x.to("meta"))
            except (NotImplementedError, RuntimeError):  # a library that copies data while building
                model = create(name).eval()
                out = {k: torch.empty(v.shape) for k, v in model.forward_features(x).items()}
        finally:
            logging.disable(logging.NOTSET)
    return {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "embed_dim": int(out["cls"].shape[-1]),
        "proj_dim": int(out["proj"].shape[-1]) if out.get("proj") is not None else None,
        "text_tower": text_tower(model) is not None,
    }


def backbone_rows(names: list[str] | None = None, build: bool = True, comparators: bool = False) -> list[dict]:
    """One dict per registered name (and per unreleased card), for tables, JSON and docs."""
    wanted = names or sorted(set(list_backbones()) | set(CARDS))
    rows = []
    for name in wanted:
        card = CARDS.get(name)
        if comparators and card is None:
            continue
        row: dict[str, Any] = {"name": name}
        if card is not None:
            row |= card.params()
        else:
            row |= {"family": "dermino ViT" if name.startswith(("dermino_", "vit_")) else "torchvision",
                    "library": "dermino" if name.startswith(("dermino_", "vit_")) else "torchvision",
                    "status": "ready", "preprocess": None, "text_tower": False, "licence": "", "download": "",
                    "sha256": ""}
        if build and row["status"] == "ready":
            row |= _measure(name)
        rows.append(row)
    return rows


_COLUMNS = [("name", "name"), ("family", "family"), ("library", "library"), ("params_m", "params (M)"),
            ("resolution", "input"), ("embed_dim", "cls dim"), ("proj_dim", "joint dim"), ("text", "text tower"),
            ("licence", "licence"), ("download", "weights"), ("sha256", "published sha256")]


def _cells(row: dict) -> dict[str, str]:
    pre = row.get("preprocess") or {}
    text = "yes" if row.get("text_tower") else ("no" if row["status"] == "ready" else "-")
    cells = {k: "" if row.get(k) is None else str(row.get(k)) for k, _ in _COLUMNS}
    cells["resolution"] = f"{pre['image_size']} px ({pre['resize_mode']} {pre['resize']})" if pre else ""
    cells["text"] = text
    if row["status"] != "ready":
        cells["params_m"] = "weights not public"
    return cells


def format_rows(rows: list[dict], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    cells = [_cells(r) for r in rows]
    heads = [h for _, h in _COLUMNS]
    if fmt == "markdown":
        lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        lines += ["| " + " | ".join(c[k] for k, _ in _COLUMNS) + " |" for c in cells]
        return "\n".join(lines)
    short = [k for k, _ in _COLUMNS if k not in ("download",)]
    widths = {k: max(len(dict(_COLUMNS)[k]), *(len(c[k]) for c in cells)) for k in short}
    out = ["  ".join(dict(_COLUMNS)[k].ljust(widths[k]) for k in short)]
    out += ["  ".join(c[k].ljust(widths[k]) for k in short) for c in cells]
    notes = [f"{r['name']}: {r['download']}" for r in rows if r.get("download")]
    return "\n".join(out + ["", "weights:"] + notes)


def cmd_backbones(args: argparse.Namespace) -> int:
    rows = backbone_rows(args.names or None, build=not args.no_build, comparators=args.comparators)
    print(format_rows(rows, args.format))
    return 0
