"""Settings of a segmentation run (``dermino segment train``), loaded from configs/segment/*.yaml.

The defaults are the paper's protocol (section 4.2.3): frozen encoder, Adam 1e-3 with a cosine
decay over 20 epochs, 224x224 inputs. Paths are relative to the working directory, so a config
never contains an absolute path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from dermino.config import (
    AtLeast1,
    Checked,
    Device,
    NonNegative,
    Positive,
    Probability,
    Range,
    Rule,
)
from dermino.evaluate.dense import DEFAULT_RIDGE

HEADS = ("linear", "upernet")


@dataclass
class AugmentConfig:
    """Joint image/mask augmentation: the same geometry is applied to both."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(lambda a: len(a.scale) == 2 and 0 < a.scale[0] <= a.scale[1] <= 1,
             "augment.scale must be [low, high] in (0, 1]"),
    )

    enabled: bool = True
    hflip: Annotated[float, Probability] = 0.5
    vflip: Annotated[float, Probability] = 0.5
    rot90: bool = True  # random multiple of 90 degrees (square inputs only)
    scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # area share of the crop
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.333])  # crop aspect range


@dataclass
class SegmentConfig(Checked):
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(lambda c: len(c.img_size) in (1, 2) and min(c.img_size) > 0,
             "img_size must be [side] or [height, width], each > 0"),
        Rule(lambda c: c.dice_weight + c.ce_weight > 0, "dice_weight and ce_weight must not both be 0"),
        Rule(lambda c: c.linear_fit == "sgd" or (c.head == "linear" and not c.finetune_backbone),
             "linear_fit: ridge fits a linear head on a frozen backbone (head: linear, finetune_backbone: false)"),
    )

    manifest: str = ""  # required to train (checked when training starts)
    name: str = ""  # backbone label in results (default: the backbone name)
    backbone: str = "dermino_vit_base_14"  # registry name for dermino.models.create
    weights: str | None = None  # local checkpoint; None = random init (tests, smoke runs)
    backbone_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. depth, embed_dim
    head: Literal["linear", "upernet"] = "linear"
    # how the linear head is fitted: sgd = the paper's protocol (Adam, Dice + CE, epochs);
    # ridge = the closed-form dense probe of dermino.evaluate.dense (deterministic, no epochs,
    # no augmentation): the pretraining monitor's dense_dice is this probe's Dice
    linear_fit: Literal["sgd", "ridge"] = "sgd"
    probe_ridge: Annotated[float, Positive] = DEFAULT_RIDGE  # ridge penalty of linear_fit: ridge
    out: str = "runs/segment"
    img_size: list[int] = field(default_factory=lambda: [224, 224])  # [side] or [height, width]
    epochs: Annotated[int, AtLeast1] = 20
    batch_size: Annotated[int, AtLeast1] = 16
    lr: Annotated[float, Positive] = 1e-3
    weight_decay: Annotated[float, NonNegative] = 0.0
    warmup_epochs: Annotated[float, NonNegative] = 0.0
    dice_weight: Annotated[float, NonNegative] = 1.0  # loss = dice_weight * soft Dice loss + ce_weight * cross-entropy
    ce_weight: Annotated[float, NonNegative] = 1.0
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1
    upernet_channels: int = 64  # the usual mmseg value is 512; 64 keeps CPU runs light
    layers: list[int] = field(default_factory=list)  # backbone blocks fed to the head (default: auto)
    finetune_backbone: bool = False
    backbone_lr: Annotated[float, Positive] = 1e-5  # only used when finetune_backbone
    cache_features: bool = True  # frozen backbone + augmentation off: embed each image once
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mask_threshold: Annotated[float | None, Range(gt=0, le=1)] = None  # accept soft/anti-aliased masks: lesion >= this x top level
    train_split: str = "train"
    val_split: str = "val"  # model selection; the test split is never looked at while training
    test_split: str = "test"
    max_train: int = 0  # first N training rows after a seeded shuffle (0 = all)
    max_val: int = 0
    seed: int = 0
    device: Annotated[str, Device()] = "auto"  # auto | cpu | cuda | cuda:1 ... (must exist here)
    num_workers: int = 0
    bootstrap: Annotated[int, NonNegative] = 1000
    progress: bool = True

    @property
    def size_hw(self) -> tuple[int, int]:
        s = self.img_size
        return (int(s[0]), int(s[0])) if len(s) == 1 else (int(s[0]), int(s[1]))
