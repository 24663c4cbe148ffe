"""``dermino classifier train``: a calibrated linear head on a frozen backbone, saved as one folder.

Steps: cached embeddings of every row (``dermino.features``), the linear probe of the
evaluation suite fitted on train with weight decay and epoch chosen on a validation split
carved from train by lesion (``evaluate.linear``), one temperature fitted on that same
validation split, then held-out test metrics with bootstrap CIs and ECE before/after
scaling with a reliability diagram. The test rows are never used to fit or select anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from torch import nn

from dermino.classifier.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
    softmax,
)
from dermino.classifier.model import Classifier, backbone_spec, save_classifier
from dermino.config import AtLeast1, Checked, Device, NonEmpty, NonNegative, Positive, Range, to_dict
from dermino.evaluate.config import DatasetSpec
from dermino.evaluate.linear import LinearConfig, fit_linear_probe
from dermino.evaluate.metrics import CLASSIFICATION_METRICS
from dermino.evaluate.runner import prepare_dataset
from dermino.evaluate.stats import bootstrap_ci
from dermino.features import EmbedConfig, eval_transform, extract_embeddings
from dermino.models import create
from dermino.results import Metric, Result, code_version, write_result

log = logging.getLogger(__name__)


@dataclass
class ClassifierConfig(Checked):
    manifest: str = ""
    out: str = "runs/classifier"
    backbone: str = "dermino_vit_base_14"
    weights: str = ""  # local checkpoint of the backbone ('' = random init: tests only)
    backbone_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. img_size for tiny models
    label_column: str = "labels"
    positive: str = ""  # binary task: this label vs the rest
    test_split: str = "test"
    val_split: str = ""  # '' = carve validation from train by lesion (the default)
    val_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.15
    image_size: Annotated[int, AtLeast1] = 224
    pool: Literal["cls", "mean", "cls+mean"] = "cls"
    batch_size: Annotated[int, AtLeast1] = 64
    device: Annotated[str, Device()] = "cpu"
    cache_dir: str = ""  # "": <folder of out>/cache/embeddings (shared with 'index build' beside it)
    epochs: Annotated[int, AtLeast1] = 50
    lr: Annotated[float, Positive] = 5e-3
    weight_decays: Annotated[list[float], NonEmpty()] = field(default_factory=lambda: [0.0, 1e-4, 1e-3, 1e-2])
    select_metric: Literal["auroc", "balanced_accuracy", "loss"] = "auroc"
    n_bins: Annotated[int, Range(ge=2)] = 15
    n_resamples: Annotated[int, NonNegative] = 1000
    seed: int = 0


def train_classifier(cfg: ClassifierConfig, backbone: nn.Module | None = None) -> Path:
    """Train, calibrate, evaluate and save; returns the output folder.

    ``backbone`` (already built) skips ``create`` (tests use tiny random ViTs).
    """
    cfg.validate()
    if not cfg.manifest:
        raise ValueError("classifier train: --manifest is required")
    if backbone is None:
        backbone = create(cfg.backbone, weights=cfg.weights or None, **cfg.backbone_overrides)
    backbone.eval()
    spec = DatasetSpec(name=Path(cfg.manifest).stem, manifest=cfg.manifest, label_column=cfg.label_column,
                       positive=cfg.positive, test_split=cfg.test_split, val_split=cfg.val_split,
                       val_fraction=cfg.val_fraction)
    ds = prepare_dataset(spec, seed=cfg.seed)
    counts = {s: int((ds.split == s).sum()) for s in ("train", "val", "test")}
    log.info("classifier: %s rows, classes %s", counts, ds.class_names)
    if counts["val"] == 0:
        raise ValueError(f"{cfg.manifest}: no validation rows could be carved (too few train lesions?)")
    ecfg = EmbedConfig(image_size=cfg.image_size, pool=cfg.pool, batch_size=cfg.batch_size,
                       cache_dir=cfg.cache_dir or str(Path(cfg.out).parent / "cache" / "embeddings"),
                       device=cfg.device)
    emb = extract_embeddings(backbone, ds.df, ecfg, weights=cfg.weights or None, model_name=cfg.backbone)
    x = emb.features
    tr, va, te = (np.flatnonzero(ds.split == s) for s in ("train", "val", "test"))
    lcfg = LinearConfig(epochs=cfg.epochs, lr=cfg.lr, weight_decays=list(cfg.weight_decays),
                        select_metric=cfg.select_metric, seed=cfg.seed)
    probe = fit_linear_probe(x[tr], ds.y[tr], len(ds.class_names), x[va], ds.y[va], lcfg)

    def logits(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = (torch.as_tensor(x[rows], dtype=torch.float32) - probe.mean) / probe.std
            return probe.layer(t).double().numpy()

    temperature = fit_temperature(logits(va), ds.y[va])
    metrics: dict[str, Metric] = {}
    calibration: dict[str, Any] = {"temperature": temperature, "fitted_on": "val", "n_bins": cfg.n_bins}
    out = Path(cfg.out)
    if len(te):
        z, y = logits(te), ds.y[te]
        before, after = softmax(z), softmax(z, temperature)
        pred = after.argmax(1)
        present = sorted(int(k) for k in np.unique(y))
        for name, fn in CLASSIFICATION_METRICS.items():
            metrics[name] = bootstrap_ci(lambda yy, pp, dd, fn=fn: fn(yy, pp, dd, present), y, after, pred,
                                         n_resamples=cfg.n_resamples, seed=cfg.seed)
        for tag, probs in (("before", before), ("after", after)):
            metrics[f"ece_{tag}"] = bootstrap_ci(
                lambda yy, pp: expected_calibration_error(pp, yy, cfg.n_bins), y, probs,
                n_resamples=cfg.n_resamples, seed=cfg.seed)
        calibration["ece_before"] = metrics["ece_before"].value
        calibration["ece_after"] = metrics["ece_after"].value
        calibration["evaluated_on"] = "test"
        reliability_diagram(before, after, y, out / "reliability.png", cfg.n_bins)
        calibration["diagram"] = "reliability.png"
        log.info("classifier: test ECE %.4f -> %.4f (T = %.3f), AUROC %.3f", calibration["ece_before"],
                 calibration["ece_after"], temperature, metrics["auroc"].value)
    else:
        log.warning("classifier: no test rows: metrics and ECE are not measured")

    transform = eval_transform(backbone, ecfg)
    model = Classifier(
        backbone, ds.class_names, transform, cfg.pool, feat_dim=x.shape[1], temperature=temperature,
        backbone_spec=backbone_spec(cfg.backbone, backbone, cfg.backbone_overrides),
        info={
            "training_data": {
                "manifest": str(cfg.manifest), "n": counts,
                "per_class": {c: {s: int(((ds.y == k) & (ds.split == s)).sum()) for s in counts}
                              for k, c in enumerate(ds.class_names)},
                "sources": sorted(str(s) for s in ds.df["source"].dropna().unique()) if "source" in ds.df else [],
            },
            "selection": {"weight_decay": probe.weight_decay, "epoch": probe.epoch, "val_score": probe.val_score,
                          "metric": cfg.select_metric},
            "calibration": calibration,
            "metrics": {k: vars(v) for k, v in metrics.items()},
            "weights": {"source": cfg.weights, "embedding_cache": emb.key},
            "config": to_dict(cfg),
            "code_version": code_version(),
        },
    )
    with torch.no_grad():
        model.head.weight.copy_(probe.layer.weight)
        model.head.bias.copy_(probe.layer.bias)
        model.feat_mean.copy_(probe.mean)
        model.feat_std.copy_(probe.std)
    save_classifier(model, out)
    if metrics:
        write_result(Result(backbone=cfg.backbone, dataset=spec.name, task="classifier", metrics=metrics,
                            config=to_dict(cfg), extra={"calibration": calibration}), out / "results")
    return out
