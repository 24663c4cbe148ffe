"""What a pretraining run writes as it goes: metrics.csv (and TensorBoard), and its speed.

A resumed run redoes the steps after its checkpoint, so the rows logged after that step are
dropped first (the same rule serves the monitor's CSV).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from dermino.pretrain.knowledge_monitor import COLUMNS as KNOWLEDGE_COLUMNS
from dermino.pretrain.model import TERMS

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "step", "epoch", "images", "loss", *TERMS, "lr", "wd", "momentum", "teacher_temp",
    "grad_norm", "images_per_s", "mfu", "skipped", *KNOWLEDGE_COLUMNS,
    "teacher_entropy", "prototypes_used", "head_warmup",
]



def drop_rows_after(path: Path, step: int) -> None:
    """A resumed run redoes the steps after its checkpoint: forget their logged rows."""
    if path.is_file() and path.stat().st_size > 0 and step >= 0:
        old = pd.read_csv(path)
        old[old["step"] <= step].to_csv(path, index=False)


class MetricsWriter:
    """metrics.csv, appended; on resume the rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, from_step: int):
        drop_rows_after(path, from_step)
        new = not path.is_file() or path.stat().st_size == 0
        self.fh = open(path, "a", newline="")  # noqa: SIM115
        self.writer = csv.DictWriter(self.fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def tensorboard_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("run.tensorboard=true but tensorboard is not installed; logging to CSV only")
        return None
    return SummaryWriter(str(path))


class Throughput:
    """Images per second since the last logged row."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0, self.images = time.perf_counter(), 0

    def add(self, images: int) -> None:
        self.images += images

    def rate(self) -> float:
        return self.images / max(time.perf_counter() - self.t0, 1e-9)


class RunLog:
    """Rank 0's metrics.csv (and TensorBoard when ``run.tensorboard``)."""

    def __init__(self, trainer: Any):  # a pretrain Trainer
        self.metrics = MetricsWriter(trainer.out_dir / "metrics.csv", trainer.step)
        self.tb = tensorboard_writer(trainer.out_dir / "tb") if trainer.cfg.run.tensorboard else None

    def write(self, row: dict[str, Any], step: int) -> None:
        self.metrics.write(row)
        if self.tb:
            for k in METRIC_COLUMNS[3:]:
                if k in row:
                    self.tb.add_scalar(k, row[k], step)

    def close(self) -> None:
        self.metrics.close()
        if self.tb:
            self.tb.close()
