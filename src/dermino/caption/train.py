"""Train the projector and the LoRA adapters on image-caption pairs (``dermino caption train``).

AdamW with two parameter groups (projector lr 4e-4, LoRA lr 8e-5 by default, as the paper),
linear warm-up then cosine decay, gradient clipping. The frozen encoder's features are
computed once before the first step. The run directory is written after every epoch
(atomically), so a crash loses at most the epoch in progress; ``train_log.csv`` has one row
per logged step with the loss, the step time and the peak memory.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dermino.caption.config import CaptionConfig
from dermino.caption.data import load_examples
from dermino.caption.generate import encode_paths, resolve_device
from dermino.caption.model import Captioner, build_captioner
from dermino.config import save_config, to_dict
from dermino.progress import tqdm

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process' peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def lm_dtype(cfg: CaptionConfig, device: torch.device) -> torch.dtype:
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return torch.float32


@dataclass
class TrainSummary:
    run: Path
    steps: int
    seconds_per_step: float
    peak_memory_mb: float
    first_loss: float
    last_loss: float
    skipped: int
    n_train: int


def train_captioner(cfg: CaptionConfig, lm=None, tokenizer=None, encoder=None) -> TrainSummary:
    """Train and save a captioner into ``cfg.out``; ``lm``/``tokenizer``/``encoder`` may be given pre-built."""
    cfg.validate()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = lm_dtype(cfg, device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    train, skipped = load_examples(cfg.manifests, cfg.train_split, cfg.max_train, cfg.seed)
    if not train:
        raise ValueError(f"no captioned images in split {cfg.train_split!r} of {cfg.manifests} "
                         f"({skipped} without caption); run 'dermino caption make-captions' first")
    log.info("caption train: %d pairs (%d images without caption skipped)", len(train), skipped)
    if lm is not None and dtype != torch.float32:
        lm = lm.to(dtype)
    cap = build_captioner(cfg.model, lm=lm, tokenizer=tokenizer, encoder=encoder,
                          encoder_weights=cfg.encoder_weights, lm_dtype=dtype)
    cap.to(device)
    feats = encode_paths(cap, [e.image for e in train], cfg.image_size, progress=cfg.progress,
                         cache_dir=cfg.feature_cache)
    targets = [e.caption for e in train]
    labels = [e.labels[0] if e.labels else "" for e in train]
    prompts: list[str | None] = [None] * len(train)
    if cfg.vqa_training:
        rows, qa = question_rows(cfg, train)
        if rows:
            feats = torch.cat([feats, feats[torch.as_tensor(rows)]])
            targets += [q.answer for q in qa]
            labels += [labels[i] for i in rows]
            prompts += [q.question for q in qa]
            log.info("caption train: + %d criteria questions of %d annotated images", len(qa), len(set(rows)))
        else:
            log.warning("vqa_training: no training image has dermoscopic criteria annotations (PH2)")
    summary = fit(cap, feats, targets, cfg, device, out, labels=labels,
                  prompts=prompts if any(p is not None for p in prompts) else None)
    summary.skipped = skipped
    return summary


def question_rows(cfg: CaptionConfig, train: list) -> tuple[list[int], list]:
    """(example index, question) of every criterion question of the annotated training images."""
    from dermino.caption.clinical import true_criteria_ph2
    from dermino.caption.data import example_rows
    from dermino.caption.vqa import qa_pairs

    rows, qa = [], []
    for i, row in enumerate(example_rows(cfg.manifests, train)):
        truth = true_criteria_ph2(row)
        if truth is None:
            continue
        for q in qa_pairs(truth, cfg.seed, train[i].row):
            rows.append(i)
            qa.append(q)
    return rows, qa


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def stage_lr_factor(group: str, step: int, total: int, align: int, warmup: int) -> float:
    """Learning-rate factor of a parameter group at ``step`` of ``total`` (the first ``align`` steps
    are the projector-only alignment stage: LoRA waits, then gets its own warm-up and cosine)."""
    if group == "lora":
        return 0.0 if step < align else _lr_factor(step - align, total - align, warmup)
    return _lr_factor(step, total, warmup)


def epoch_order(n: int, labels: list[str] | None, sampling: str, gen: torch.Generator) -> torch.Tensor:
    """One epoch of row indices: a permutation, or (``balanced``) ``n`` draws with replacement, each
    diagnosis equally likely (rows weighted by the inverse of their diagnosis' count)."""
    if sampling == "uniform" or not labels:
        return torch.randperm(n, generator=gen)
    _, inverse, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True,
                                   return_counts=True)
    weights = torch.as_tensor(1.0 / counts[inverse], dtype=torch.float64)
    return torch.multinomial(weights, n, replacement=True, generator=gen)


def fit(cap: Captioner, feats: torch.Tensor, captions: list[str], cfg: CaptionConfig, device: torch.device,
        out: Path, labels: list[str] | None = None, prompts: list[str | None] | None = None) -> TrainSummary:
    """The optimisation loop over precomputed features; saves ``out`` after every epoch.

    ``cfg.align_steps`` first steps train the projector alone (LoRA frozen); the LoRA stage then
    runs ``max_steps`` (or the epochs') steps. ``labels`` (the first diagnosis of each row) drive
    balanced sampling; ``prompts`` (a question per row, None = the spec's prompt) train answers."""
    groups = cap.trainable_parameters()
    params = [{"params": groups["lora"], "lr": cfg.lora_lr, "name": "lora"}]
    if groups["projector"]:
        params.append({"params": groups["projector"], "lr": cfg.projector_lr, "name": "projector"})
    for g in params:
        g["initial_lr"] = g["lr"]
    opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
    n = len(captions)
    per_epoch = math.ceil(n / cfg.batch_size)
    align = cfg.align_steps if groups["projector"] else 0
    total = align + (cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * per_epoch)))
    gen = torch.Generator().manual_seed(cfg.seed)
    autocast = device.type == "cuda" and cfg.precision != "fp32"
    log_path = out / "train_log.csv"
    with log_path.open("w", newline="") as f:
        csv.writer(f).writerow(["step", "epoch", "loss", "lr_projector", "lr_lora", "seconds", "peak_memory_mb"])
    cap.train()
    step, losses, times = 0, [], []
    bar = tqdm(total=total, desc="caption train", disable=not cfg.progress, leave=False)
    epoch = 0
    while step < total:
        order = epoch_order(n, labels, cfg.sampling, gen)
        for i in range(0, n, cfg.batch_size):
            if step >= total:
                break
            idx = order[i : i + cfg.batch_size]
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * stage_lr_factor(g["name"], step, total, align, cfg.warmup_steps)
            for p in groups["lora"]:  # frozen in the alignment stage: no gradient, no Adam state
                p.requires_grad_(step >= align)
            t0 = time.perf_counter()
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = cap(feats[idx] if cap.uses_image else None, [captions[j] for j in idx],
                           max_caption_tokens=cfg.max_caption_tokens,
                           prompts=[prompts[j] for j in idx] if prompts else None)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"caption train: loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], cfg.grad_clip)
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.item()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step % max(1, cfg.log_every) == 0 or step == total or step == 1:
                lrs = {g["name"]: g["lr"] for g in opt.param_groups}
                with log_path.open("a", newline="") as f:
                    csv.writer(f).writerow([step, epoch, f"{losses[-1]:.5f}", lrs.get("projector", ""), lrs["lora"],
                                            f"{times[-1]:.4f}", f"{peak_memory_mb(device):.1f}"])
        epoch += 1
        _save(cap, cfg, out, step, losses, times, device)
    bar.close()
    _save(cap, cfg, out, step, losses, times, device)
    k = max(1, min(5, len(losses) // 4))
    return TrainSummary(out, step, float(np.median(times[1:] if len(times) > 1 else times)),
                        peak_memory_mb(device), float(np.mean(losses[:k])), float(np.mean(losses[-k:])), 0, n)


def _save(cap: Captioner, cfg: CaptionConfig, out: Path, step: int, losses: list[float], times: list[float],
          device: torch.device) -> None:
    cap.save(out, extra={
        "steps": step,
        "train_loss_last": losses[-1] if losses else None,
        "seconds_per_step": float(np.median(times)) if times else None,
        "peak_memory_mb": peak_memory_mb(device),
        "image_size": cfg.image_size,
        "config": to_dict(cfg),
    })
