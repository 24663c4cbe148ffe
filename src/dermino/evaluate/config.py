"""The evaluation config: backbones x datasets x protocols, loaded from configs/eval/*.yaml.

Paths (manifests, weights, out_dir, cache) are relative to the working directory, so a
config never contains an absolute path and runs from the repository root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dermino.evaluate.calibration import CalibrationConfig
from dermino.evaluate.fewshot import FewShotConfig
from dermino.evaluate.knn import KNNConfig
from dermino.evaluate.label_efficiency import LabelEfficiencyConfig
from dermino.evaluate.linear import LinearConfig
from dermino.evaluate.retrieval import RetrievalConfig
from dermino.evaluate.zero_shot import ZeroShotConfig
from dermino.features import EmbedConfig

PROTOCOLS = ("knn", "linear", "fewshot", "fairness", "zeroshot", "calibration", "label_efficiency", "retrieval")


@dataclass
class BackboneSpec:
    name: str  # label used in results and tables
    model: str = ""  # registry name for dermino.models.create (default: name)
    weights: str | None = None  # local checkpoint file
    overrides: dict[str, Any] = field(default_factory=dict)  # e.g. depth, embed_dim, img_size
    corpus: list[str] = field(default_factory=list)  # manifests of its declared pretraining data (contamination)


@dataclass
class DatasetSpec:
    name: str
    manifest: str
    label_column: str = "labels"  # first ';'-separated label is the class
    positive: str = ""  # when set: binary task, this label vs the rest (e.g. melanoma)
    classes: list[str] = field(default_factory=list)  # fixed class order (default: sorted)
    # graded task (e.g. acne severity): `classes` lists the grades from lowest to highest, and the
    # results add quadratic weighted kappa, which counts a two-grade miss four times a one-grade miss
    ordinal: bool = False
    test_split: str = "test"  # manifest split used as test (e.g. "val" when test is unlabelled)
    val_split: str = "val"  # manifest split for model selection; "" or absent: carved from train by group
    val_fraction: float = 0.15
    # rows with no split get a grouped, stratified train/test split with this test share
    # (the paper's protocol is 0.5); 0 = use only the manifest's own splits
    assign_test_fraction: float = 0.0
    max_train: int = 0  # subsample for quick runs (0 = all)
    max_test: int = 0
    prompts: str = ""  # zero-shot prompts YAML; "" = configs/eval/prompts/<longest prefix of name>.yaml
    caption_column: str = "caption"  # image-to-text retrieval reads captions here (when present)


@dataclass
class FairnessConfig:
    attributes: list[str] = field(default_factory=lambda: ["sex", "age", "fitzpatrick", "skin_tone"])
    protocol: str = "linear"  # whose predictions are broken down by group
    min_group_size: int = 10


@dataclass
class EvalConfig:
    name: str = "eval"
    out_dir: str = "runs/eval"
    backbones: list[BackboneSpec] = field(default_factory=list)
    datasets: list[DatasetSpec] = field(default_factory=list)
    protocols: list[str] = field(default_factory=lambda: ["knn", "linear"])
    reference: str = ""  # backbone others are compared with (default: the first)
    main_metric: str = "auroc"
    bootstrap: int = 1000
    seed: int = 0
    progress: bool = True
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    knn: KNNConfig = field(default_factory=KNNConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)  # backbones with an exported knowledge head
    # per-group ECE and equalised-odds gaps of fairness.protocol's predictions, over fairness.attributes
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    label_efficiency: LabelEfficiencyConfig = field(default_factory=LabelEfficiencyConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    preset: str = ""  # set by --preset (recorded in config.yaml); see evaluate/presets.py

    def validate(self) -> None:
        if not self.backbones:
            raise ValueError("evaluate config: no backbones listed")
        if not self.datasets:
            raise ValueError("evaluate config: no datasets listed")
        bad = sorted(set(self.protocols) - set(PROTOCOLS))
        if bad:
            raise ValueError(f"evaluate config: unknown protocol(s) {bad}; known: {list(PROTOCOLS)}")
        names = [b.name for b in self.backbones]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluate config: backbone names must be unique, got {names}")
        if self.reference and self.reference not in names:
            raise ValueError(f"evaluate config: reference {self.reference!r} is not one of {names}")
        for ds in self.datasets:
            if ds.ordinal and (ds.positive or len(ds.classes) < 2):
                raise ValueError(f"dataset {ds.name}: ordinal needs `classes` listing at least two grades in "
                                 "order (lowest first) and no `positive`")
        if "fairness" in self.protocols and self.fairness.protocol not in self.protocols:
            raise ValueError(f"fairness.protocol {self.fairness.protocol!r} must also be in protocols")
