"""Collapse monitoring for continued pretraining: teacher statistics, a kNN guard, good checkpoints.

Two symptoms tell a collapsing self-distillation run early:

* the teacher's output: its mean per-image entropy (nats; ``log K`` = uniform, 0 = one-hot) and
  the effective number of prototypes it uses, ``exp(H(mean over the batch of p))`` (1 = every
  image to one prototype). Both come from ``softmax(teacher_logits / temperature)`` before any
  centring or Sinkhorn (those force a spread-out target whatever the teacher says);
* the periodic monitor score falling below the score of the initial weights: kNN on held-out
  labelled images, RankMe, the dense probe's Dice, or (rising above) the Gram distance to the
  start. ``CollapseGuard`` counts monitor evaluations more than ``margin`` worse than the step-0
  score (for ``gram_distance``, more than ``margin`` above it); ``patience`` in a row stop the run. Every evaluation within the margin marks its step
  good: its checkpoint is hard-linked into ``checkpoints/good/`` so pruning cannot delete it,
  and on a stop the later checkpoints move to ``checkpoints/collapsed/`` so that ``--resume``
  continues from the last good one.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dermino.pretrain.checkpoint import list_checkpoints

log = logging.getLogger(__name__)

SCORES = ("knn_accuracy", "knn_macro_auroc", "rankme", "dense_dice", "gram_distance")
LARGER_IS_WORSE = frozenset({"gram_distance"})  # a distance from the start; the others are qualities
MONITOR_COLUMNS = ["step", *SCORES, *(f"{name}_change" for name in SCORES), "below_start"]


class CollapseError(RuntimeError):
    """The monitor score stayed worse than the start for too long; the message names the checkpoint to resume."""


@torch.no_grad()
def teacher_statistics_values(logits: Tensor, temperature: float) -> Tensor:
    """``[teacher_entropy, prototypes_used]`` as a device tensor (no sync: the fast step reads it later)."""
    if logits.numel() == 0:
        return torch.full((2,), math.nan, device=logits.device)
    logp = torch.log_softmax(logits.detach().float() / temperature, dim=-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1).mean()
    mean = p.mean(0)
    marginal = -(mean * torch.log(mean.clamp_min(1e-30))).sum()
    return torch.stack([entropy, marginal.exp()])


def teacher_statistics(logits: Tensor, temperature: float) -> dict[str, float]:
    """``teacher_entropy`` (mean per-row entropy, nats) and ``prototypes_used`` (effective number)."""
    entropy, used = teacher_statistics_values(logits, temperature).tolist()
    return {"teacher_entropy": entropy, "prototypes_used": used}


@dataclass
class Verdict:
    """One monitor evaluation judged against the start."""

    step: int
    score: float
    change: float | None  # score - start (None: no start to compare with)
    below: int  # evaluations in a row more than ``margin`` worse than the start
    stop: bool

    @property
    def good(self) -> bool:
        return self.change is not None and self.below == 0


class CollapseGuard:
    """Counts consecutive evaluations more than ``margin`` worse than the step-0 score ("worse" is
    lower, or higher for the metrics in ``LARGER_IS_WORSE``)."""

    def __init__(self, metric: str, margin: float, patience: int):
        self.metric, self.margin, self.patience = metric, margin, patience
        self.start: dict[str, float] = {}
        self.below = 0
        self.last_good_step: int | None = None

    def update(self, step: int, scores: dict[str, float]) -> Verdict:
        if step == 0:
            self.start = dict(scores)
            self.below, self.last_good_step = 0, 0
        score = scores[self.metric]
        if self.metric not in self.start:
            return Verdict(step, score, None, 0, False)
        change = score - self.start[self.metric]
        # NaN (undefined metric on this query set) counts as neither good nor bad
        if math.isnan(change):
            return Verdict(step, score, change, self.below, False)
        worse = change if self.metric in LARGER_IS_WORSE else -change
        self.below = self.below + 1 if worse > self.margin else 0
        if self.below == 0:
            self.last_good_step = step
        stop = self.patience > 0 and self.below >= self.patience
        return Verdict(step, score, change, self.below, stop)

    def row(self, step: int, scores: dict[str, float], verdict: Verdict) -> dict[str, float | int | str]:
        """A monitor.csv row: the scores and their change from the start."""
        out: dict[str, float | int | str] = {"step": step, **scores, "below_start": verdict.below}
        for name, value in scores.items():
            out[f"{name}_change"] = value - self.start[name] if name in self.start else ""
        return out

    def replay(self, rows: list[dict[str, float]]) -> None:
        """Rebuild the state from monitor.csv rows (a resumed run)."""
        for r in sorted(rows, key=lambda r: int(r["step"])):
            scores = {k: float(r[k]) for k in SCORES if k in r and r[k] == r[k] and r[k] != ""}
            if self.metric in scores:
                self.update(int(r["step"]), scores)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copy2(src, dst)


def keep_good(ckpt_dir: str | Path, step: int) -> Path | None:
    """Hard-link ``step_<step>.pt`` into ``good/`` (replacing older good ones); pruning then can't lose it."""
    ckpt_dir = Path(ckpt_dir)
    src = ckpt_dir / f"step_{step:08d}.pt"
    if not src.is_file():
        return None
    good = ckpt_dir / "good"
    good.mkdir(parents=True, exist_ok=True)
    _link_or_copy(src, good / src.name)
    for old in good.glob("step_*.pt"):
        if old.name != src.name:
            old.unlink(missing_ok=True)
    return good / src.name


def set_aside(ckpt_dir: str | Path, good_step: int) -> tuple[Path | None, list[Path]]:
    """Move checkpoints after ``good_step`` to ``collapsed/`` and put the good one back in place.

    Returns (the checkpoint ``--resume`` will now pick, or None for "restart from the initial
    weights"; the moved files).
    """
    ckpt_dir = Path(ckpt_dir)
    aside = ckpt_dir / "collapsed"
    moved = []
    for path in list_checkpoints(ckpt_dir):
        if int(path.stem.split("_")[1]) > good_step:
            aside.mkdir(parents=True, exist_ok=True)
            os.replace(path, aside / path.name)
            moved.append(aside / path.name)
    resume = None
    if good_step > 0:
        resume = ckpt_dir / f"step_{good_step:08d}.pt"
        kept = ckpt_dir / "good" / resume.name
        if not resume.is_file() and kept.is_file():
            _link_or_copy(kept, resume)
        resume = resume if resume.is_file() else None
    return resume, moved


def collapse_message(guard: CollapseGuard, verdict: Verdict, resume: Path | None, moved: list[Path],
                     out_dir: Path) -> str:
    start = guard.start[guard.metric]
    side = "above" if guard.metric in LARGER_IS_WORSE else "below"
    msg = (f"collapse guard: {guard.metric} stayed more than {guard.margin} {side} its start ({start:.4f}) "
           f"for {verdict.below} monitor evaluations in a row (now {verdict.score:.4f} at step {verdict.step}); "
           "run stopped. ")
    if moved:
        msg += f"{len(moved)} later checkpoint(s) moved to {moved[0].parent}. "
    fix = "raise schedule.head_warmup_images or lower optim.base_lr"
    if resume is not None:
        msg += (f"Last good checkpoint: {resume} (step {guard.last_good_step}); resume from it with "
                f"`dermino pretrain --config {out_dir / 'config.yaml'} --out {out_dir} --resume` ({fix}).")
    else:
        msg += f"No checkpoint after the start scored within the margin: restart from model.init_weights ({fix})."
    return msg
