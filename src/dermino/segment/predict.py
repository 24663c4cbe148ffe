"""Inference with a trained segmentation run: masks, overlays, and evaluation with CIs.

Predictions are made at the model's input size and the logits are upsampled (bilinear) to
each image's original size before the argmax, so metrics and written masks are at the
resolution of the ground truth, not of the network.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch.utils.data import DataLoader

from dermino.config import from_dict, to_dict
from dermino.data.images import IMAGE_EXTENSIONS, read_rgb
from dermino.data.manifest import read_manifest
from dermino.evaluate import segmentation as M
from dermino.files import UnsafeFileError, load_torch
from dermino.progress import tqdm
from dermino.results import Result, write_result
from dermino.runtime import pick_device
from dermino.segment.config import SegmentConfig
from dermino.segment.data import EvalDataset, Pair, collate_eval, mask_pairs, to_tensor
from dermino.segment.heads import SegmentationModel, build_segmentation_model

log = logging.getLogger(__name__)

CHECKPOINTS = {"best": "head_best.pt", "last": "head_last.pt"}


def resolve_device(name: str) -> torch.device:
    """Kept for callers of this name; the one implementation is :func:`dermino.runtime.pick_device`."""
    return pick_device(name)


def load_run(run_dir: str | Path, which: str = "best", device: str | None = None) -> tuple[SegmentationModel, SegmentConfig]:
    """The model of a ``train_segmentation`` run (``which`` = best | last), in eval mode."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINTS.get(which, which)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path} (is {run_dir} a 'dermino segment train' output?)")
    ckpt = load_torch(path, what="segmentation head")  # weights_only: a shared head cannot run code
    if not isinstance(ckpt, dict) or "head" not in ckpt or "config" not in ckpt:
        raise UnsafeFileError(f"{path} is not a 'dermino segment train' checkpoint (no 'head'/'config')")
    cfg = from_dict(SegmentConfig, ckpt["config"], where=str(path))
    if ckpt.get("backbone") is None and cfg.weights and not Path(cfg.weights).is_file():
        cfg.weights = ckpt.get("weights_abs") or cfg.weights  # run from another directory
    model = build_segmentation_model(cfg, backbone_state=ckpt.get("backbone"))
    model.head.load_state_dict(ckpt["head"])
    model.to(resolve_device(device or cfg.device)).eval()
    return model, cfg


@torch.no_grad()
def predict_batch(model: SegmentationModel, x: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Bool lesion masks, one per image, at the given (H, W) sizes."""
    logits = model(x)
    out = []
    for i, size in enumerate(sizes):
        up = F.interpolate(logits[i : i + 1].float(), size=tuple(size), mode="bilinear", align_corners=False)
        out.append(up[0].argmax(0).cpu().numpy().astype(bool))
    return out


def iter_predictions(
    model: SegmentationModel,
    pairs: list[Pair],
    size_hw: tuple[int, int],
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "predict",
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(index into pairs, predicted mask, true mask)`` for every pair, at the mask's resolution."""
    bb = model.backbone
    ds = EvalDataset(pairs, size_hw, bb.mean, bb.std)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_eval)
    device = next(model.head.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for x, masks, idx in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            preds = predict_batch(model, x.to(device), [m.shape for m in masks])
            for i, p, m in zip(idx, preds, masks, strict=True):
                yield i, p, m.numpy()
    finally:
        model.train(was_training)


def evaluate_pairs(model: SegmentationModel, pairs: list[Pair], size_hw: tuple[int, int], **kw) -> np.ndarray:
    """``(N, 4)`` lesion counts [tp, fp, fn, tn] per image, in the order of ``pairs``."""
    c = np.zeros((len(pairs), 4), dtype=np.int64)
    for i, pred, mask in iter_predictions(model, pairs, size_hw, **kw):
        c[i] = M.counts(pred, mask)
    return c


# ---------------------------------------------------------------------------- outputs


def write_mask_png(mask: np.ndarray, path: str | Path) -> Path:
    """A bool mask as an 8-bit PNG with values 0 / 255."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(path)
    return path


def _contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)


def overlay(image: Image.Image, pred: np.ndarray, target: np.ndarray | None = None, alpha: float = 0.35) -> Image.Image:
    """The image with the predicted lesion tinted red (with a red outline) and the truth outlined in green."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    pred = np.asarray(pred, dtype=bool)
    if pred.shape != rgb.shape[:2]:
        raise ValueError(f"mask {pred.shape} does not match image {rgb.shape[:2]}")
    red = np.array([255.0, 0.0, 0.0])
    rgb[pred] = (1 - alpha) * rgb[pred] + alpha * red
    width = max(1, min(rgb.shape[:2]) // 150)
    rgb[_contour(pred, width)] = red
    if target is not None:
        rgb[_contour(np.asarray(target, dtype=bool), width)] = np.array([0.0, 255.0, 0.0])
    return Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8))


def _expand_images(images: Sequence[str | Path]) -> list[Path]:
    out: list[Path] = []
    for item in images:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"image not found: {p}")
    if not out:
        raise ValueError(f"no images found in {', '.join(map(str, images))}")
    return out


def predict_images(
    run_dir: str | Path, images: Sequence[str | Path], out_dir: str | Path, overlays: bool = True,
    device: str | None = None, progress: bool = True,
) -> list[Path]:
    """Write ``<stem>_mask.png`` (0/255) and ``<stem>_overlay.png`` for each image (files or folders)."""
    model, cfg = load_run(run_dir, device=device)
    out_dir = Path(out_dir)
    paths = _expand_images(images)
    h, w = cfg.size_hw
    device_ = next(model.head.parameters()).device
    written = []
    for path in tqdm(paths, desc="segment", unit="img", disable=not progress):
        image = read_rgb(path)
        x = to_tensor(image.resize((w, h), Image.Resampling.BILINEAR), model.backbone.mean, model.backbone.std)
        pred = predict_batch(model, x[None].to(device_), [(image.height, image.width)])[0]
        written.append(write_mask_png(pred, out_dir / f"{path.stem}_mask.png"))
        if overlays:
            overlay(image, pred).save(out_dir / f"{path.stem}_overlay.png")
    return written


# ---------------------------------------------------------------------------- evaluation


def _dataset_name(df: pd.DataFrame, manifest: str | Path) -> str:
    sources = sorted({s for s in df.get("source", pd.Series(dtype=str)).astype(str) if s})
    return sources[0] if len(sources) == 1 else Path(manifest).stem


def evaluate_segmentation(
    run_dir: str | Path,
    manifest: str | Path | None = None,
    split: str | None = None,
    out_dir: str | Path | None = None,
    write_predictions: bool = True,
    n_bootstrap: int | None = None,
    empty: str = "one",
    which: str = "best",
    device: str | None = None,
    progress: bool | None = None,
) -> Result:
    """Score a run on ``split`` (default: the run's test split) and write the results JSON.

    Results go to ``out_dir`` (default ``<run>/results``); with ``write_predictions`` the
    predicted masks and overlays go to ``<run>/predictions/<dataset>_<split>/``.
    """
    run_dir = Path(run_dir)
    model, cfg = load_run(run_dir, which=which, device=device)
    manifest = manifest or cfg.manifest
    split = split or cfg.test_split
    progress = cfg.progress if progress is None else progress
    df = read_manifest(manifest)
    dataset = _dataset_name(df, manifest)
    pairs = mask_pairs(df, split, cfg.mask_threshold)
    if not pairs:
        raise ValueError(f"{manifest}: no rows in split '{split}'")
    pred_dir = run_dir / "predictions" / f"{dataset}_{split}"
    c = np.zeros((len(pairs), 4), dtype=np.int64)
    for i, pred, mask in iter_predictions(
        model, pairs, cfg.size_hw, cfg.batch_size, cfg.num_workers, progress, desc=f"evaluate {split}"
    ):
        c[i] = M.counts(pred, mask)
        if write_predictions:
            stem = pairs[i].image.stem
            write_mask_png(pred, pred_dir / f"{stem}_mask.png")
            overlay(read_rgb(pairs[i].image), pred, mask).save(pred_dir / f"{stem}_overlay.png")
    n_boot = cfg.bootstrap if n_bootstrap is None else n_bootstrap
    metrics = M.summarize(c, n_bootstrap=n_boot, seed=cfg.seed, empty=empty)
    dice_img = M.per_image(c, "dice", empty=empty)
    jac_img = M.per_image(c, "jaccard", empty=empty)
    result = Result(
        backbone=cfg.name or cfg.backbone,
        dataset=dataset,
        task=f"segmentation-{cfg.head}",
        metrics=metrics,
        config=to_dict(cfg),
        extra={
            "split": split,
            "manifest": str(manifest),
            "n_images": len(pairs),
            "checkpoint": which,
            "headline": "dice/jaccard: lesion class, mean over images; *_pooled: all pixels together; "
            "*_background: background class; *_mean_classes: mean of both (the original code's Dice)",
            "empty_mask_convention": empty,
            "whole_image_baseline": {"dice": M.whole_image_baseline(c, "dice"),
                                     "jaccard": M.whole_image_baseline(c, "jaccard")},
            "per_image": [
                {"image": str(p.image.name), "row": p.row, "dice": float(d), "jaccard": float(j)}
                for p, d, j in zip(pairs, dice_img, jac_img, strict=True)
            ],
            "predictions": str(pred_dir) if write_predictions else "",
        },
    )
    path = write_result(result, out_dir or run_dir / "results")
    log.info("segmentation %s on %s/%s: Dice %.4f, Jaccard %.4f -> %s",
             cfg.head, dataset, split, metrics["dice"].value, metrics["jaccard"].value, path)
    return result
