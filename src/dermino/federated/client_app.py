"""The Flower ``ClientApp``: a site trains and evaluates the trainable part on its own rows.

The site's SuperNode says which data is its own through ``--node-config``: ``config`` (a
federated YAML on the site's machine: manifests, column, backbone, embedding) and
``partition`` (its value of the column). A reply holds the trainable tensors (``train.trainable``:
the head, the last blocks, or LoRA adapters + head; the names the server listed) and a
``MetricRecord`` of counts and scores, nothing else: no features, labels or file names.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from dermino.features import memory_tier
from dermino.federated.config import FederatedConfig, load_federated_config
from dermino.federated.partitions import ClientData, client_data, load_manifests
from dermino.federated.task import evaluate_head, train_head
from dermino.federated.trainable import (
    build_model,
    load_trainable,
    site_inputs,
    trainable_names,
    trainable_state,
)

log = logging.getLogger(__name__)
app = ClientApp()


def site(cfg: FederatedConfig, config_path: str, partition: str, classes: list[str]) -> tuple[ClientData, np.ndarray]:
    """This site's rows and the frozen part's output for them (computed once per process)."""
    key = (config_path, partition, tuple(classes), cfg.train.trainable, cfg.train.last_k)

    def load() -> tuple[ClientData, np.ndarray]:
        df = load_manifests(cfg.data, cfg.out_dir)
        data = client_data(df, cfg.data, partition, classes)
        return data, site_inputs(cfg, data)

    return memory_tier().get_or_compute("federated.sites", key, load)


def _setup(msg: Message, context: Context):
    nc = context.node_config
    for key in ("config", "partition"):
        if key not in nc:
            raise ValueError(f"node config has no {key!r}: start the SuperNode with "
                             "--node-config \"config='site.yaml' partition='NAME'\"")
    cfg = load_federated_config(str(nc["config"]))
    conf = msg.content["config"]
    classes = [str(c) for c in conf["classes"]]
    data, feats = site(cfg, str(nc["config"]), str(nc["partition"]), classes)
    model = build_model(cfg, len(classes), dim=feats.shape[-1] if cfg.train.trainable == "head" else None)
    if "trainable-names" in conf and list(conf["trainable-names"]) != trainable_names(model):
        raise ValueError(f"the server trains {conf.get('trainable')!r} tensors that do not match this site's "
                         f"train.trainable={cfg.train.trainable!r} model: use the server's settings")
    load_trainable(model, {k: v.numpy() for k, v in msg.content["arrays"].items()})
    return conf, data, feats, model


@app.train()
def train(msg: Message, context: Context) -> Message:
    conf, data, feats, head = _setup(msg, context)
    tr = data.rows("train")
    loss = train_head(
        head, feats[tr], data.y[tr], epochs=int(conf["local-epochs"]), lr=float(conf["lr"]),
        batch_size=int(conf["batch-size"]), weight_decay=float(conf["weight-decay"]),
        proximal_mu=float(conf.get("proximal-mu", 0.0)), seed=int(conf["seed"]) + int(conf["server-round"]),
    )
    metrics = MetricRecord({"num-examples": len(tr), "train-loss": loss})
    return Message(RecordDict({"arrays": ArrayRecord(trainable_state(head)), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, data, feats, head = _setup(msg, context)
    va = data.rows("val")
    scores = evaluate_head(head, feats[va], data.y[va])
    metrics = MetricRecord({"num-examples": len(va), **{f"val-{k}": float(v) for k, v in scores.items()}})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
