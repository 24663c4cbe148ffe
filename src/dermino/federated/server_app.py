"""The Flower ``ServerApp``: run the strategy, save the global model after every round.

Deployed with ``flwr run`` (``dermino federate server`` does that) the app reads its settings
from the run config: ``config`` (a federated YAML on the server machine) and ``out-dir``. The
same :func:`run_federation` drives the in-process simulation.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from dermino.federated.config import FederatedConfig, load_federated_config
from dermino.federated.partitions import class_names, client_names, load_manifests
from dermino.federated.strategies import build_strategy
from dermino.federated.task import init_head
from dermino.federated.trainable import (
    base_reference,
    build_model,
    feature_dim,
    load_trainable,
    trainable_names,
    trainable_state,
)
from dermino.files import load_torch
from dermino.pretrain.checkpoint import save_atomic

log = logging.getLogger(__name__)
app = ServerApp()


def resolve_classes(cfg: FederatedConfig, work_dir: Path) -> list[str]:
    """``data.classes``, or the union over the clients when the server can read the manifests."""
    if cfg.data.classes:
        return list(cfg.data.classes)
    try:
        df = load_manifests(cfg.data, work_dir)
    except FileNotFoundError as exc:
        raise ValueError(f"data.classes is empty and the server cannot read the manifests ({exc}); "
                         "list the label space in data.classes") from exc
    return class_names(df, cfg.data, client_names(df, cfg.data))


def save_global(out: Path, server_round: int, state: dict, classes: list[str], base: dict | None = None) -> Path:
    """``global/round_NNN.pt`` and ``global/latest.pt`` (atomic: a crash keeps the last good one).

    ``state`` holds the trainable tensors only; ``base`` names the frozen backbone they belong to
    (``trainable.load_full_model`` turns the file into a full model).
    """
    payload = {"state": {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()},
               "classes": list(classes), "round": int(server_round), **({"base": base} if base else {})}
    path = save_atomic(payload, out / "global" / f"round_{server_round:03d}.pt")
    save_atomic(payload, out / "global" / "latest.pt")
    return path


def load_global(path: str | Path):
    """(head, classes, round) from a saved ``train.trainable=head`` global model (data only:
    ``weights_only=True``); any mode: ``trainable.load_full_model``."""
    payload = load_torch(path, what="federated global model")
    w = payload["state"]["fc.weight"]
    head = init_head(int(w.shape[1]), int(w.shape[0]))
    load_trainable(head, {k: v.numpy() for k, v in payload["state"].items()})
    return head, list(payload["classes"]), int(payload["round"])


def run_federation(grid: Grid, cfg: FederatedConfig, out: str | Path) -> dict:
    """Rounds of the configured strategy over the clients on ``grid``; returns the history."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = resolve_classes(cfg, out)
    dim = feature_dim(cfg)
    model = build_model(cfg, len(classes), dim)
    random.seed(cfg.train.seed)  # flwr's strategies sample sites with the `random` module
    base = base_reference(cfg)
    strategy = build_strategy(cfg.strategy, out / "rounds.jsonl")
    (out / "rounds.jsonl").unlink(missing_ok=True)
    train_config = ConfigRecord({
        "lr": float(cfg.train.lr), "local-epochs": int(cfg.train.local_epochs),
        "batch-size": int(cfg.train.batch_size), "weight-decay": float(cfg.train.weight_decay),
        "seed": int(cfg.train.seed), "classes": list(classes),
        # the sites check they train exactly these tensors (same mode, same backbone) before they start
        "trainable": cfg.train.trainable, "trainable-names": trainable_names(model),
    })
    evaluate_config = ConfigRecord({"classes": list(classes)})
    timing: dict[str, float] = {}
    started = [time.perf_counter()]

    def on_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Called before round 1 and after each round: save the global model, time the round."""
        save_global(out, server_round, {k: v.numpy() for k, v in arrays.items()}, classes, base)
        now = time.perf_counter()
        if server_round:
            timing[str(server_round)] = now - started[0]
            log.info("round %d done in %.1fs; global model saved", server_round, now - started[0])
        started[0] = now
        (out / "timing.json").write_text(json.dumps({"seconds_per_round": timing}, indent=2))
        return None

    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(trainable_state(model)), num_rounds=cfg.strategy.rounds,
        timeout=cfg.strategy.round_timeout, train_config=train_config,
        evaluate_config=evaluate_config, evaluate_fn=on_round,
    )
    history = {
        "strategy": cfg.strategy.name, "trainable": cfg.train.trainable, "rounds": cfg.strategy.rounds, "classes": classes, "dim": dim,
        "train": {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
        "evaluate": {str(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
        "seconds_per_round": timing,
    }
    (out / "history.json").write_text(json.dumps(history, indent=2, default=float))
    return history


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    if "config" not in rc:
        raise ValueError("run config has no 'config' (path of the federated YAML on the server)")
    cfg = load_federated_config(str(rc["config"]))
    run_federation(grid, cfg, str(rc.get("out-dir", "") or cfg.out_dir))
