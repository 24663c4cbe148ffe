"""Set-up shared by the benchmark scripts: arguments, manifests, the tiny CPU ViT, timing, output.

The scripts import it as ``from _common import ...`` (Python puts the script's folder first on
the path when a script runs), so each stays runnable as ``python benchmarks/<script>.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# tiny_cpu.yaml's network: ViT-Tiny/14, width 192, 4 blocks, LayerScale 0.1 (so a random-init
# baseline has the same architecture *and* initialisation scheme the pretraining runs started from)
TINY_ARCH = {"depth": 4, "layerscale_init": 0.1}


def load_average() -> str:
    """The 1/5/15-minute load average, printed beside every timing on a shared machine."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def add_data_argument(ap: argparse.ArgumentParser) -> None:
    """``--data``: the folder with the published datasets, default ``$DERMINO_SHARED_DATA``."""
    ap.add_argument("--data", default=os.environ.get("DERMINO_SHARED_DATA", ""),
                    help="folder with ham10000/, isic2017/, ph2/ as published (or $DERMINO_SHARED_DATA)")


def require_data(ap: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    if not args.data:
        ap.error("--data (or $DERMINO_SHARED_DATA) is required")
    return Path(args.data)


def published_manifests(data: Path, out: Path) -> dict[str, Path]:
    """Manifests of HAM10000, ISIC 2017 and PH2 under ``out/manifests`` (built once, then reused)."""
    from dermino.demo import prepare_published

    found = {k: out / "manifests" / f"{k}.csv" for k in ("ham10000", "isic2017", "ph2")}
    if all(p.is_file() for p in found.values()):
        return found
    return prepare_published(data, out / "manifests", seed=0)


def tiny_cpu_config(overrides: list[str]):
    """configs/pretrain/tiny_cpu.yaml with dotted ``overrides`` (validated once)."""
    from dermino.config import apply_overrides, load_config
    from dermino.pretrain import PretrainConfig

    cfg = load_config(PretrainConfig, REPO / "configs" / "pretrain" / "tiny_cpu.yaml")
    apply_overrides(cfg, overrides)
    return cfg


def evaluation_config(name: str, out: Path, weights: dict[str, str | None], manifests: dict[str, Path],
                      reference: str, protocols: list[str], eval_size: int):
    """kNN / linear evaluation of tiny-ViT weights on HAM10000 (7 classes) and ISIC 2017 (melanoma)."""
    from dermino.evaluate.config import BackboneSpec, DatasetSpec, EvalConfig

    ecfg = EvalConfig(name=name, out_dir=str(out / "eval"), reference=reference, protocols=protocols)
    ecfg.backbones = [BackboneSpec(name=k, model="dermino_vit_tiny_14", weights=w, overrides=dict(TINY_ARCH))
                      for k, w in weights.items()]
    ecfg.datasets = [
        DatasetSpec(name="ham10000", manifest=str(manifests["ham10000"])),
        DatasetSpec(name="isic2017-melanoma", manifest=str(manifests["isic2017"]), positive="melanoma",
                    test_split="val", val_split=""),
    ]
    ecfg.embed.image_size = eval_size
    ecfg.embed.cache_dir = str(out / "cache")
    ecfg.progress = False
    return ecfg


def time_steps(step: Callable[[int], None], finish: Callable[[], None], warmup: int, repeats: int,
               steps: int) -> dict[str, Any]:
    """``warmup`` untimed calls of ``step(i)``, then ``repeats`` timed runs of ``steps`` calls each.

    ``finish`` waits for the device (and reads deferred values) before a clock is read. Returns the
    median wall and process-CPU seconds per step (CPU seconds: what the process got on a shared machine).
    """
    t = time.perf_counter()
    for i in range(warmup):
        step(i)
    finish()
    warmup_s = time.perf_counter() - t
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(steps):
            step(i)
        finish()
        wall.append((time.perf_counter() - t0) / steps)
        cpu.append((time.process_time() - c0) / steps)
    return {"warmup_s": warmup_s, "step_s": statistics.median(wall), "step_s_all": wall,
            "cpu_s_per_step": statistics.median(cpu)}


def write_json(obj: Any, path: Path) -> Path:
    """Write a result file (parents made), atomically; returns the path."""
    from dermino.files import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=2, default=_plain))
    return path


def _plain(value: Any) -> Any:
    """JSON for numpy scalars / arrays (their numbers) and anything else (its text: paths, ...)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------------------- the script skeleton
def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments every benchmark has: ``--threads`` (default 1: honest timings on a shared
    machine) and ``--out`` (the JSON file, default benchmarks/results/<script>.json)."""
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", default="", help="result JSON (default benchmarks/results/<script>.json)")
    return ap


def start(args: argparse.Namespace) -> None:
    """Apply ``--threads`` before anything is timed."""
    import torch

    torch.set_num_threads(args.threads)


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Rows as a fixed-width table; ``columns`` are (key, header, format spec such as '7.2f')."""
    widths = [max(len(header), len(format(rows[0][key], spec)) if rows else 0) for key, header, spec in columns]
    lines = [" ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths, strict=True))]
    for r in rows:
        lines.append(" ".join(format(r[k], s).rjust(w) for (k, _, s), w in zip(columns, widths, strict=True)))
    return "\n".join(lines)


def report(script: str, args: argparse.Namespace, title: str, rows: list[dict[str, Any]],
           columns: list[tuple[str, str, str]], **extra: Any) -> Path:
    """Print the title (with threads and load), the table, and write the JSON result file."""
    print(f"{title}; {args.threads} thread(s), load {load_average()}")
    print(format_table(rows, columns))
    out = Path(args.out) if args.out else RESULTS / f"{Path(script).stem}.json"
    params = {k: v for k, v in vars(args).items() if k != "out"}
    return write_json({**params, **extra, "load": load_average(), "results": rows}, out)
