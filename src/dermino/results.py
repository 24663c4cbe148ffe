"""Results files: one JSON per (backbone, dataset, task), so reports are built from files.

Every evaluation (kNN, linear probe, fairness, segmentation, …) writes its numbers here
with the confidence interval, the config that produced them and the code version; the
report and comparisons read these files and never re-run anything.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dermino
from dermino.files import write_text_atomic

SCHEMA_VERSION = 1


@dataclass
class Metric:
    """A point estimate with its (percentile bootstrap) confidence interval."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None  # number of test items the value is computed on


@dataclass
class Result:
    backbone: str
    dataset: str
    task: str  # e.g. "knn", "linear", "fairness", "segmentation-linear"
    metrics: dict[str, Metric]
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # per-class values, groups, curves …
    code_version: str = ""
    created: str = ""


def format_metric(m: Metric | None, digits: int = 3) -> str:
    """``0.812 [0.780, 0.845]`` — the value with its 95 % interval when known."""
    if m is None or m.value is None or (isinstance(m.value, float) and math.isnan(m.value)):
        return "–"
    text = f"{m.value:.{digits}f}"
    if m.ci_low is not None and m.ci_high is not None:
        text += f" [{m.ci_low:.{digits}f}, {m.ci_high:.{digits}f}]"
    return text


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    version = dermino.__version__
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{version}+{sha}" if sha else version


def result_filename(backbone: str, dataset: str, task: str) -> str:
    safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "-" for c in s)  # noqa: E731
    return f"{safe(backbone)}__{safe(dataset)}__{safe(task)}.json"


def write_result(result: Result, out_dir: str | Path) -> Path:
    """Write atomically to ``out_dir/<backbone>__<dataset>__<task>.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.code_version = result.code_version or code_version()
    result.created = result.created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    payload = {"schema": SCHEMA_VERSION, "python": platform.python_version(), **asdict(result)}
    path = out_dir / result_filename(result.backbone, result.dataset, result.task)
    write_text_atomic(path, json.dumps(payload, indent=2, default=_json_default))
    return path


def read_result(path: str | Path) -> Result:
    data = json.loads(Path(path).read_text())
    data.pop("schema", None)
    data.pop("python", None)
    data["metrics"] = {k: Metric(**v) for k, v in data["metrics"].items()}
    return Result(**data)


def read_results(folder: str | Path) -> list[Result]:
    return [read_result(p) for p in sorted(Path(folder).glob("*__*__*.json"))]


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
