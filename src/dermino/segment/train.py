"""Train a segmentation head on a (frozen by default) backbone: ``train_segmentation(cfg) -> run dir``.

The run directory holds ``config.yaml``, ``head_best.pt`` (best validation lesion Dice; the
test split is never looked at), ``head_last.pt`` and ``history.json``. Checkpoints hold the
head, and the backbone too when it was fine-tuned or randomly initialised (so a run can be
reloaded without the original weights file being the only copy of the encoder).

With a frozen backbone and augmentation off, the backbone sees each training image once:
its feature maps are cached and the head trains on them (``cache_features``), which makes
the paper's 20-epoch protocol cost about one backbone pass.

``linear_fit: ridge`` replaces the epochs by the closed-form dense probe of
:mod:`dermino.evaluate.dense` (what the pretraining monitor's ``dense_dice`` measures), written
into an ordinary ``LinearHead`` so evaluation and prediction are unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dermino.config import ConfigError, save_config, to_dict
from dermino.data.manifest import read_manifest
from dermino.data.masks import subset_pairs
from dermino.evaluate import segmentation as M
from dermino.evaluate.dense import DenseProbe, fit_dense_probe
from dermino.files import save_atomic
from dermino.progress import tqdm
from dermino.runtime import seed_everything
from dermino.segment.config import SegmentConfig
from dermino.segment.data import SegmentationDataset, check_masks, mask_pairs
from dermino.segment.heads import LinearHead, SegmentationModel, build_segmentation_model
from dermino.segment.losses import DiceCELoss
from dermino.segment.predict import CHECKPOINTS, evaluate_pairs, resolve_device

log = logging.getLogger(__name__)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 over ``total`` optimiser steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _save(path: Path, model: SegmentationModel, cfg: SegmentConfig, extra: dict) -> None:
    keep_backbone = cfg.finetune_backbone or not cfg.weights
    payload = {
        "head": model.head.state_dict(),
        "backbone": model.backbone.state_dict() if keep_backbone else None,
        "config": to_dict(cfg),
        "weights_abs": str(Path(cfg.weights).resolve()) if cfg.weights else None,
        "layers": model.layers,
        **extra,
    }
    save_atomic(payload, path)


@torch.no_grad()
def _cache_features(
    model: SegmentationModel, ds: SegmentationDataset, batch_size: int, device: torch.device, progress: bool
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Feature maps of every training image (one tensor per backbone layer, on CPU) and the masks."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    feats: list[list[torch.Tensor]] = []
    masks = []
    for x, y, _ in tqdm(loader, desc="cache features", unit="batch", disable=not progress, leave=False):
        f = model.features(x.to(device))
        feats.append([t.cpu() for t in f])
        masks.append(y)
    return [torch.cat([b[k] for b in feats]) for k in range(len(model.layers))], torch.cat(masks)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a last batch of a single image is dropped (BatchNorm needs two)."""
    order = torch.randperm(n, generator=generator)
    out = list(order.split(batch_size))
    if len(out) > 1 and len(out[-1]) == 1:
        out.pop()
    return out


def set_linear_head(head: LinearHead, probe: DenseProbe) -> None:
    """Make ``head`` compute the probe: BatchNorm the identity, the lesion logit ``w·x + b - 0.5``
    and the background logit 0, so its argmax is the probe's ``score > 0.5``."""
    eps = head.bn.eps
    with torch.no_grad():
        head.bn.reset_running_stats()  # mean 0, var 1: the BN divides by sqrt(1 + eps) ...
        head.bn.weight.fill_(1.0)
        head.bn.bias.zero_()
        head.classifier.weight.zero_()
        head.classifier.bias.zero_()
        w = probe.weight * math.sqrt(1.0 + eps)  # ... which the weight undoes
        head.classifier.weight[1, :, 0, 0] = w.to(head.classifier.weight)
        head.classifier.bias[1] = probe.bias - 0.5


def _fit_ridge_head(
    cfg: SegmentConfig, model: SegmentationModel, train_pairs: list, val_pairs: list, out: Path, device: torch.device
) -> Path:
    """``linear_fit: ridge``: the closed-form dense probe as the linear head (no epochs, no augmentation)."""
    if not isinstance(model.head, LinearHead):
        raise ValueError("linear_fit: ridge needs the linear head")
    t0 = time.time()
    probe = fit_dense_probe(model.backbone, train_pairs, cfg.size_hw, layer=model.layers[-1], ridge=cfg.probe_ridge,
                            batch_size=cfg.batch_size, device=device)
    set_linear_head(model.head, probe)
    model.eval()
    entry: dict = {"epoch": 1, "fit": "ridge", "seconds": round(time.time() - t0, 2)}
    if val_pairs:
        c = evaluate_pairs(model, val_pairs, cfg.size_hw, batch_size=cfg.batch_size, progress=False)
        entry["val_dice"] = M.mean_per_image(c, "dice")
        entry["val_jaccard"] = M.mean_per_image(c, "jaccard")
    log.info("segment: ridge-fitted linear head on %d images (%s)", len(train_pairs),
             ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if isinstance(v, float)))
    for which in ("best", "last"):
        _save(out / CHECKPOINTS[which], model, cfg, {"epoch": 1, "val_dice": entry.get("val_dice")})
    (out / "history.json").write_text(json.dumps([entry], indent=2))
    return out


def train_segmentation(cfg: SegmentConfig, model: SegmentationModel | None = None) -> Path:
    """Train the head (and the backbone if ``finetune_backbone``); return the run directory.

    ``model`` replaces the one ``cfg`` describes (a custom backbone); its backbone is then
    saved in the checkpoints unless ``cfg.weights`` names the file it came from.
    """
    cfg.validate()
    if not cfg.manifest:
        raise ConfigError("segment config: 'manifest' is required (a manifest with a mask column)")
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    df = read_manifest(cfg.manifest)
    train_pairs = subset_pairs(mask_pairs(df, cfg.train_split, cfg.mask_threshold), cfg.max_train, cfg.seed)
    if len(train_pairs) < 2:
        raise ValueError(f"{cfg.manifest}: split '{cfg.train_split}' has {len(train_pairs)} image(s) with a mask; need >= 2")
    val_pairs = subset_pairs(mask_pairs(df, cfg.val_split, cfg.mask_threshold), cfg.max_val, cfg.seed) if cfg.val_split else []
    if not val_pairs:
        log.warning("no '%s' rows with masks: the last epoch is kept (no model selection)", cfg.val_split)
    if cfg.val_split and cfg.val_split == cfg.test_split:
        raise ValueError(f"val_split and test_split are both '{cfg.test_split}': never select on the test set")

    check_masks(train_pairs + val_pairs, cfg.progress)
    model = (model if model is not None else build_segmentation_model(cfg)).to(device)
    save_config(cfg, out / "config.yaml")
    if cfg.linear_fit == "ridge":
        return _fit_ridge_head(cfg, model, train_pairs, val_pairs, out, device)
    bb = model.backbone
    size_hw = cfg.size_hw
    ds = SegmentationDataset(train_pairs, size_hw, bb.mean, bb.std, augment=cfg.augment, seed=cfg.seed)
    use_cache = cfg.cache_features and not cfg.finetune_backbone and ds.augment is None
    cached = _cache_features(model, ds, cfg.batch_size, device, cfg.progress) if use_cache else None

    params = [{"params": [p for p in model.head.parameters() if p.requires_grad], "lr": cfg.lr}]
    if cfg.finetune_backbone:
        params.append({"params": [p for p in bb.parameters() if p.requires_grad], "lr": cfg.backbone_lr})
    opt = torch.optim.Adam(params, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = len(_batches(len(ds), cfg.batch_size, torch.Generator().manual_seed(0)))
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    criterion = DiceCELoss(cfg.dice_weight, cfg.ce_weight)
    gen = torch.Generator().manual_seed(cfg.seed)
    log.info(
        "segment: %s head on %s (%s), %d train / %d val images at %dx%d, %d epochs x %d steps%s",
        cfg.head, cfg.backbone, "fine-tuned" if cfg.finetune_backbone else "frozen", len(train_pairs),
        len(val_pairs), *size_hw, cfg.epochs, steps_per_epoch, ", cached features" if use_cache else "",
    )

    history: list[dict] = []
    best = -1.0
    step = 0
    t0 = time.time()
    for epoch in range(cfg.epochs):
        model.train()
        ds.set_epoch(epoch)
        losses = []
        batches = _batches(len(ds), cfg.batch_size, gen)
        if cached is not None:
            source = ((cached[0], cached[1], idx) for idx in batches)
        else:  # the batch sampler keeps the seeded order; workers only decode and augment
            source = DataLoader(ds, batch_sampler=[b.tolist() for b in batches], num_workers=cfg.num_workers)
        bar = tqdm(source, total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not cfg.progress, leave=False)
        for x, y, idx in bar:
            if cached is not None:
                feats = [f[idx].to(device) for f in x]
                y = y[idx].to(device)
                logits = model.head(feats, size_hw)
            else:
                x, y = x.to(device), y.to(device)
                logits = model(x)
            loss = criterion(logits, y)
            for g, base in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = base * lr_factor(step, total, warmup)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        entry: dict = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.time() - t0, 2)}
        if val_pairs:
            c = evaluate_pairs(model, val_pairs, size_hw, batch_size=cfg.batch_size, progress=False)
            entry["val_dice"] = M.mean_per_image(c, "dice")
            entry["val_jaccard"] = M.mean_per_image(c, "jaccard")
            if entry["val_dice"] > best:
                best = entry["val_dice"]
                _save(out / CHECKPOINTS["best"], model, cfg, {"epoch": epoch + 1, "val_dice": best})
        history.append(entry)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "epoch"))
        _save(out / CHECKPOINTS["last"], model, cfg, {"epoch": epoch + 1, "val_dice": entry.get("val_dice")})
    if not val_pairs:
        _save(out / CHECKPOINTS["best"], model, cfg, {"epoch": cfg.epochs, "val_dice": None})
    (out / "history.json").write_text(json.dumps(history, indent=2))
    return out

