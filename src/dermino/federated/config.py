"""Settings of a federated run, validated once at load (paper settings by default).

The paper fine-tunes across three sites with FedAvg, 2 local epochs, lr 2e-4, 2 rounds; those
are the defaults here. One file describes the whole federation: the server reads the strategy
and training sections, every client reads the data, backbone and embedding sections (a site
passes its own file with its own manifest path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

from dermino.config import (
    AtLeast1,
    NonEmpty,
    NonNegative,
    Positive,
    Range,
    SubsetOf,
    check_config,
    load_config,
)
from dermino.features import EmbedConfig

Trainable = Literal["head", "last_blocks", "lora"]
TRAINABLE: tuple[str, ...] = get_args(Trainable)
LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")  # attention in/out, MLP in/out of every block


@dataclass
class BackboneSection:
    model: str = "dermino_vit_tiny_14"  # registered name (dermino.models.create)
    weights: str | None = None  # local checkpoint file; None = random initialisation
    overrides: dict[str, Any] = field(default_factory=dict)  # constructor arguments, e.g. depth: 4


@dataclass
class DataSection:
    manifests: Annotated[list[str], NonEmpty()] = field(default_factory=lambda: ["sample"])  # "sample" = the bundled sample
    sources: list[str] = field(default_factory=list)  # keep only these `source` values (empty = all)
    column: Annotated[str, NonEmpty()] = "source"  # one client per value of this manifest column
    clients: list[str] = field(default_factory=list)  # values of `column` to use (empty = all)
    classes: list[str] = field(default_factory=list)  # label space (empty = union over the clients)
    min_rows: int = 10  # a value of `column` with fewer labelled rows is not a client
    val_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.15  # carved from train (by lesion) when a client has no val rows
    seed: int = 0


@dataclass
class TrainSection:
    # head: linear head on frozen, cached features; last_blocks: the last `last_k` blocks + final norm + head;
    # lora: LoRA adapters (rank/alpha/targets below) in every block + head. Only these tensors leave a site.
    trainable: Trainable = "head"
    last_k: Annotated[int, AtLeast1] = 2
    lora_rank: Annotated[int, AtLeast1] = 8
    lora_alpha: Annotated[float, Positive] = 16.0
    lora_targets: Annotated[list[str], SubsetOf(LORA_TARGETS)] = field(default_factory=lambda: ["qkv", "proj"])  # add fc1, fc2 for the MLPs
    local_epochs: Annotated[int, AtLeast1] = 2
    lr: Annotated[float, Positive] = 2e-4
    batch_size: Annotated[int, AtLeast1] = 32
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class StrategySection:
    name: Literal["fedavg", "fedprox"] = "fedavg"
    rounds: Annotated[int, AtLeast1] = 2
    proximal_mu: Annotated[float, NonNegative] = 0.01  # FedProx only
    fraction_train: Annotated[float, Range(gt=0, le=1)] = 1.0
    fraction_evaluate: Annotated[float, Range(ge=0, le=1)] = 1.0  # 0 = no federated evaluation rounds (faster; compare evaluates after)
    min_clients: Annotated[int, AtLeast1] = 2  # a round goes ahead once this many clients are connected / replied
    start_clients: Annotated[int, NonNegative] = 0  # round 1 waits until this many sites are connected (0 = min_clients)
    round_timeout: Annotated[float, Positive] = 600.0  # seconds to wait for replies before aggregating what came


@dataclass
class CompareSection:
    n_resamples: Annotated[int, NonNegative] = 1000
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
    """Every declared choice and range (the annotations above), once, naming the bad key."""
    return check_config(cfg, "federated config")


def load_federated_config(path: str | None = None, overrides: list[str] | None = None) -> FederatedConfig:
    return load_config(FederatedConfig, path, overrides)  # load_config runs every declared check
