"""Settings of a federated run, validated once at load (paper settings by default).

The paper fine-tunes across three sites with FedAvg, 2 local epochs, lr 2e-4, 2 rounds; those
are the defaults here. One file describes the whole federation: the server reads the strategy
and training sections, every client reads the data, backbone and embedding sections (a site
passes its own file with its own manifest path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dermino.config import ConfigError, load_config
from dermino.evaluate.embeddings import EmbedConfig

TRAINABLE = ("head", "last_blocks", "lora")
LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")  # attention in/out, MLP in/out of every block
STRATEGIES = ("fedavg", "fedprox")


@dataclass
class BackboneSection:
    model: str = "dermino_vit_tiny_14"  # registered name (dermino.models.create)
    weights: str | None = None  # local checkpoint file; None = random initialisation
    overrides: dict[str, Any] = field(default_factory=dict)  # constructor arguments, e.g. depth: 4


@dataclass
class DataSection:
    manifests: list[str] = field(default_factory=lambda: ["sample"])  # "sample" = the bundled sample
    sources: list[str] = field(default_factory=list)  # keep only these `source` values (empty = all)
    column: str = "source"  # one client per value of this manifest column
    clients: list[str] = field(default_factory=list)  # values of `column` to use (empty = all)
    classes: list[str] = field(default_factory=list)  # label space (empty = union over the clients)
    min_rows: int = 10  # a value of `column` with fewer labelled rows is not a client
    val_fraction: float = 0.15  # carved from train (by lesion) when a client has no val rows
    seed: int = 0


@dataclass
class TrainSection:
    # head: linear head on frozen, cached features; last_blocks: the last `last_k` blocks + final norm + head;
    # lora: LoRA adapters (rank/alpha/targets below) in every block + head. Only these tensors leave a site.
    trainable: Literal["head", "last_blocks", "lora"] = "head"
    last_k: int = 2
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: ["qkv", "proj"])  # add fc1, fc2 for the MLPs
    local_epochs: int = 2
    lr: float = 2e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class StrategySection:
    name: Literal["fedavg", "fedprox"] = "fedavg"
    rounds: int = 2
    proximal_mu: float = 0.01  # FedProx only
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0  # 0 = no federated evaluation rounds (faster; compare evaluates after)
    min_clients: int = 2  # a round goes ahead once this many clients are connected / replied
    start_clients: int = 0  # round 1 waits until this many sites are connected (0 = min_clients)
    round_timeout: float = 600.0  # seconds to wait for replies before aggregating what came


@dataclass
class CompareSection:
    n_resamples: int = 1000
    seed: int = 0
    local_epochs: int = 0  # epochs for the local/pooled baselines; 0 = rounds x local_epochs


@dataclass
class FederatedConfig:
    name: str = "federated"
    out_dir: str = "runs/federated"
    backbone: BackboneSection = field(default_factory=BackboneSection)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    compare: CompareSection = field(default_factory=CompareSection)
    progress: bool = True


def validate(cfg: FederatedConfig) -> FederatedConfig:
    """Check choices and ranges once, naming the bad key."""
    checks = [
        (cfg.train.trainable in TRAINABLE, f"train.trainable must be one of {TRAINABLE}"),
        (cfg.strategy.name in STRATEGIES, f"strategy.name must be one of {STRATEGIES}"),
        (cfg.strategy.rounds >= 1, "strategy.rounds must be >= 1"),
        (cfg.strategy.min_clients >= 1, "strategy.min_clients must be >= 1"),
        (cfg.strategy.start_clients >= 0, "strategy.start_clients must be >= 0"),
        (0 < cfg.strategy.fraction_train <= 1, "strategy.fraction_train must be in (0, 1]"),
        (0 <= cfg.strategy.fraction_evaluate <= 1, "strategy.fraction_evaluate must be in [0, 1]"),
        (cfg.strategy.proximal_mu >= 0, "strategy.proximal_mu must be >= 0"),
        (cfg.strategy.round_timeout > 0, "strategy.round_timeout must be > 0"),
        (cfg.train.local_epochs >= 1, "train.local_epochs must be >= 1"),
        (cfg.train.lr > 0, "train.lr must be > 0"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (cfg.train.last_k >= 1, "train.last_k must be >= 1"),
        (cfg.train.lora_rank >= 1, "train.lora_rank must be >= 1"),
        (cfg.train.lora_alpha > 0, "train.lora_alpha must be > 0"),
        (bool(cfg.train.lora_targets) and set(cfg.train.lora_targets) <= set(LORA_TARGETS),
         f"train.lora_targets must be a non-empty subset of {list(LORA_TARGETS)}"),
        (0 < cfg.data.val_fraction < 1, "data.val_fraction must be in (0, 1)"),
        (bool(cfg.data.manifests), "data.manifests must name at least one manifest (or 'sample')"),
        (bool(cfg.data.column), "data.column must name a manifest column"),
        (cfg.compare.n_resamples >= 0, "compare.n_resamples must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    return cfg


def load_federated_config(path: str | None = None, overrides: list[str] | None = None) -> FederatedConfig:
    return validate(load_config(FederatedConfig, path, overrides))
