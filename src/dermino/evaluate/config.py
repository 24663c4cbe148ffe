"""The evaluation config: backbones x datasets x protocols, loaded from configs/eval/*.yaml.

Paths (manifests, weights, out_dir, cache) are relative to the working directory, so a
config never contains an absolute path and runs from the repository root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from dermino.config import AtLeast1, Checked, NonEmpty, NonNegative, Range, Rule, SubsetOf
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
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(lambda d: not d.ordinal or (not d.positive and len(d.classes) >= 2),
             "ordinal needs `classes` listing at least two grades in order (lowest first) and no `positive`"),
    )

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
    val_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.15
    # rows with no split get a grouped, stratified train/test split with this test share
    # (the paper's protocol is 0.5); 0 = use only the manifest's own splits
    assign_test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.0
    max_train: Annotated[int, NonNegative] = 0  # subsample for quick runs (0 = all)
    max_test: Annotated[int, NonNegative] = 0
    prompts: str = ""  # zero-shot prompts YAML; "" = configs/eval/prompts/<longest prefix of name>.yaml
    caption_column: str = "caption"  # image-to-text retrieval reads captions here (when present)


@dataclass
class FairnessConfig:
    attributes: list[str] = field(default_factory=lambda: ["sex", "age", "fitzpatrick", "skin_tone"])
    protocol: Literal["knn", "linear", "fewshot", "zeroshot"] = "linear"  # whose predictions are broken down by group
    min_group_size: Annotated[int, AtLeast1] = 10


def _unique_names(cfg: EvalConfig) -> bool:
    names = [b.name for b in cfg.backbones]
    return len(set(names)) == len(names)


@dataclass
class EvalConfig(Checked):
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(_unique_names, "backbone names must be unique"),
        Rule(lambda c: not c.reference or c.reference in [b.name for b in c.backbones],
             "reference must be the name of one of the backbones"),
        Rule(lambda c: "fairness" not in c.protocols or c.fairness.protocol in c.protocols,
             "fairness.protocol must also be in protocols"),
    )

    name: str = "eval"
    out_dir: str = "runs/eval"
    backbones: Annotated[list[BackboneSpec], NonEmpty()] = field(default_factory=list)
    datasets: Annotated[list[DatasetSpec], NonEmpty()] = field(default_factory=list)
    protocols: Annotated[list[str], SubsetOf(PROTOCOLS, nonempty=False)] = field(default_factory=lambda: ["knn", "linear"])
    reference: str = ""  # backbone others are compared with (default: the first)
    main_metric: str = "auroc"
    bootstrap: Annotated[int, NonNegative] = 1000
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
