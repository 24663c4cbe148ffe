"""Federated vs each client alone vs pooled training, in the evaluation suite's results format.

Every model is the same trainable part (``train.trainable``: linear head, last blocks + head, or
LoRA adapters + head) on the same frozen backbone, trained for the same number of epochs (``rounds x local_epochs`` unless ``compare.local_epochs`` says otherwise): the
federated global model (read from the run folder), one model per client trained on that
client's train rows only, and one trained on all clients' train rows pooled (what the
hospitals cannot do, the reference). Each is scored on every client's held-out test rows and
on their union: macro AUROC and macro F1 with percentile bootstrap CIs, and paired bootstrap
tests of every model against the federated one on the same rows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from dermino.evaluate.metrics import macro_auroc, macro_f1
from dermino.evaluate.stats import bootstrap_ci, paired_bootstrap
from dermino.federated.config import FederatedConfig
from dermino.federated.partitions import class_names, client_data, client_names, load_manifests
from dermino.federated.task import predict_proba, train_head
from dermino.federated.trainable import build_model, load_trainable, site_inputs
from dermino.results import Result, write_result

log = logging.getLogger(__name__)
TASK = "federated"
METRICS = {
    "auroc_macro": lambda present: (lambda y, p: macro_auroc(y, p, present)),
    "f1_macro": lambda present: (lambda y, p: macro_f1(y, np.asarray(p).argmax(1), present)),
}


def _model(cfg: FederatedConfig, x: np.ndarray, n_classes: int):
    return build_model(cfg, n_classes, dim=x.shape[-1] if cfg.train.trainable == "head" else None)


def _fit(cfg: FederatedConfig, x: np.ndarray, y: np.ndarray, n_classes: int):
    head = _model(cfg, x, n_classes)
    epochs = cfg.compare.local_epochs or cfg.strategy.rounds * cfg.train.local_epochs
    train_head(head, x, y, epochs=epochs, lr=cfg.train.lr, batch_size=cfg.train.batch_size,
               weight_decay=cfg.train.weight_decay, seed=cfg.train.seed)
    return head


def compare(cfg: FederatedConfig, run_dir: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Write one results JSON per (model, evaluation set) and ``comparison.md``; returns the folder."""
    from dermino.files import load_torch

    run_dir = Path(run_dir or cfg.out_dir)
    out = Path(out or run_dir / "compare")
    fed_path = run_dir / "global" / "latest.pt"
    if not fed_path.is_file():
        raise FileNotFoundError(f"no global model at {fed_path}: run `dermino federate simulate` first")
    saved = load_torch(fed_path, what="federated global model")
    fed_classes, fed_round = list(saved["classes"]), int(saved["round"])
    saved_mode = saved.get("base", {}).get("trainable", "head")
    if saved_mode != cfg.train.trainable:
        raise ValueError(f"{fed_path} was trained with train.trainable={saved_mode}, the config says "
                         f"{cfg.train.trainable}")
    df = load_manifests(cfg.data, run_dir)
    clients = client_names(df, cfg.data)
    classes = class_names(df, cfg.data, clients)
    if classes != fed_classes:
        raise ValueError(f"{fed_path}: classes {fed_classes} differ from this config's {classes}")
    sites = {c: client_data(df, cfg.data, c, classes) for c in clients}
    feats = {c: site_inputs(cfg, d) for c, d in sites.items()}
    first = next(iter(feats.values()))
    fed_head = load_trainable(_model(cfg, first, len(classes)), {k: v.numpy() for k, v in saved["state"].items()})

    def rows(c: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        idx = sites[c].rows(split)
        return feats[c][idx], sites[c].y[idx]

    models = {f"federated-{cfg.strategy.name}": fed_head}
    for c in clients:
        models[f"local-{c}"] = _fit(cfg, *rows(c, "train"), len(classes))
    pooled = [rows(c, "train") for c in clients]
    models["pooled"] = _fit(cfg, np.concatenate([p[0] for p in pooled]),
                            np.concatenate([p[1] for p in pooled]), len(classes))

    tests = {c: rows(c, "test") for c in clients}
    tests["union"] = (np.concatenate([t[0] for t in tests.values()]),
                      np.concatenate([t[1] for t in tests.values()]))
    reference = f"federated-{cfg.strategy.name}"
    nb, seed = cfg.compare.n_resamples, cfg.compare.seed
    table: dict[str, dict[str, dict]] = {}
    for test_name, (x, y) in tests.items():
        present = [int(k) for k in np.unique(y)]
        probs = {m: predict_proba(h, x) for m, h in models.items()}
        for method, p in probs.items():
            metrics, paired = {}, {}
            for mname, make in METRICS.items():
                fn = make(present)
                metrics[mname] = bootstrap_ci(fn, y, p, n_resamples=nb, seed=seed)
                if method != reference:
                    pc = paired_bootstrap(fn, y, p, probs[reference], n_resamples=nb, seed=seed)
                    paired[mname] = {"diff": pc.diff.value, "ci_low": pc.diff.ci_low,
                                     "ci_high": pc.diff.ci_high, "p_value": pc.p_value}
            dataset = f"{cfg.name}:{test_name}"
            write_result(Result(
                backbone=method, dataset=dataset, task=TASK, metrics=metrics,
                config={"backbone": cfg.backbone.model, "weights": cfg.backbone.weights,
                        "partition_column": cfg.data.column, "strategy": cfg.strategy.name,
                        "trainable": cfg.train.trainable,
                        "rounds": cfg.strategy.rounds, "global_round": fed_round,
                        "local_epochs": cfg.train.local_epochs, "lr": cfg.train.lr,
                        "n_resamples": nb},
                extra={"method": method, "test_set": test_name, "reference": reference,
                       "paired_vs_reference": paired, "classes": classes,
                       "partition": cfg.name, "clients": clients},
            ), out)
            table.setdefault(method, {})[test_name] = {"metrics": metrics, "paired": paired}
    (out / "comparison.md").write_text(markdown_table(table, list(tests), reference))
    log.info("comparison written to %s", out)
    return out


def _cell(metric, paired: dict | None) -> str:
    if metric is None or metric.value is None or not np.isfinite(metric.value):
        return "n/a"
    ci = f" [{metric.ci_low:.3f}, {metric.ci_high:.3f}]" if metric.ci_low is not None else ""
    mark = ""
    if paired and paired.get("p_value") is not None and np.isfinite(paired["p_value"]):
        mark = f" (Δ{paired['diff']:+.3f}, p={paired['p_value']:.3f})"
    return f"{metric.value:.3f}{ci}{mark}"


def markdown_table(table: dict, test_sets: list[str], reference: str, metric: str = "auroc_macro") -> str:
    """Rows = models, columns = test sets; Δ and p are paired against the federated model."""
    head = f"| model ({metric}) | " + " | ".join(test_sets) + " |\n"
    head += "|---|" + "---|" * len(test_sets) + "\n"
    lines = []
    for method, cells in table.items():
        vals = [_cell(cells[t]["metrics"].get(metric), cells[t]["paired"].get(metric)) for t in test_sets]
        lines.append(f"| {method} | " + " | ".join(vals) + " |")
    return head + "\n".join(lines) + f"\n\nΔ and p: paired bootstrap against {reference} on the same rows.\n"


def summary(out: str | Path) -> dict:
    """The comparison folder as plain numbers (for benchmarks and notes)."""
    from dermino.results import read_results

    rows = {}
    for r in read_results(out):
        if r.task == TASK:
            rows.setdefault(r.extra["test_set"], {})[r.backbone] = {
                k: [m.value, m.ci_low, m.ci_high] for k, m in r.metrics.items()}
    return json.loads(json.dumps(rows, default=float))
