"""The pretraining config tree: one dataclass per section, defaults = the paper recipe (ViT-B/14).

Load with ``dermino.config.load_config(PretrainConfig, path, overrides)``; every ablation row
is then an override such as ``losses.knowledge.enabled=false``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from dermino.config import (
    AtLeast1,
    ConfigError,
    Device,
    Each,
    NonNegative,
    Positive,
    Probability,
    Range,
    Rule,
    UnitInterval,
    config_problems,
)
from dermino.data.masking import MaskingConfig
from dermino.data.transforms import CropsConfig
from dermino.models.heads import HeadConfig


@dataclass
class ModelConfig:
    """Backbone by registered name, plus architecture overrides (None keeps the named size)."""

    arch: str = "dermino_vit_base_14"
    depth: Annotated[int, AtLeast1] | None = None
    embed_dim: Annotated[int, AtLeast1] | None = None
    num_heads: Annotated[int, AtLeast1] | None = None
    drop_path_rate: Annotated[float, Probability] = 0.4
    num_register_tokens: Annotated[int, NonNegative] = 0
    layerscale_init: float | None = 1e-5
    # local checkpoint to start the student (and teacher) from; None / "none": random init
    init_weights: str | None = None
    heads: HeadConfig = field(default_factory=HeadConfig)

    @property
    def init_path(self) -> str | None:
        """``init_weights`` with the explicit ``none`` read as no file."""
        w = self.init_weights
        return None if w is None or str(w).strip().lower() in ("", "none", "null") else str(w)


@dataclass
class DataConfig:
    """Which manifests to pretrain on. ``"sample"`` means the bundled sample (written to out/manifests)."""

    manifests: list[str] = field(default_factory=lambda: ["sample"])
    splits: list[str] = field(default_factory=lambda: ["train", "none"])  # rows used for pretraining
    source_weights: dict[str, float] = field(default_factory=dict)  # empty: uniform over images
    on_bad_image: Literal["raise", "skip"] = "skip"  # skip: logged, replaced by another image
    num_workers: Annotated[int, NonNegative] = 0
    epoch_size: Annotated[int, AtLeast1] | None = None  # images per "epoch" for epoch-based schedules; None: dataset size
    cache: str | None = None  # folder from `dermino data cache`: read pre-resized images from its shards
    # periodic kNN monitor (None: off): memory bank = split "train" rows of monitor_train,
    # queries = split "val" rows of monitor_val (all rows when a manifest has no such split)
    monitor_train: str | None = None
    monitor_val: str | None = None
    monitor_size: Annotated[int, AtLeast1] = 224
    # dense monitor (None: off): the closed-form linear segmentation probe of dermino.evaluate.dense
    # on the teacher's patch features, fitted on split "train" rows of this manifest (it needs a
    # mask column) and scored (lesion Dice, column dense_dice) on its split "test" rows; at most
    # monitor_masks_max of each (a seeded draw; 0 = all). Same numbers as `dermino segment` with
    # head: linear, linear_fit: ridge, img_size: [monitor_size], max_train: monitor_masks_max
    monitor_masks: str | None = None
    monitor_masks_max: Annotated[int, NonNegative] = 32
    # Gram distance to the start (column gram_distance): on the first N query images of the kNN
    # monitor (0 = off)
    monitor_gram_images: Annotated[int, NonNegative] = 16
    # evaluation manifests the corpus must not overlap (exact or pHash-identical images);
    # overlap_policy: refuse (stop before training) | warn | off. See `dermino data dedup`.
    exclude_overlap_with: list[str] = field(default_factory=list)
    overlap_policy: Literal["refuse", "warn", "off"] = "refuse"


@dataclass
class DinoLossConfig:
    enabled: bool = True
    weight: Annotated[float, NonNegative] = 1.0
    student_temp: Annotated[float, Positive] = 0.1
    teacher_temp: Annotated[float, Positive] = 0.07
    warmup_teacher_temp: Annotated[float, Positive] = 0.04
    warmup_teacher_temp_epochs: Annotated[float, NonNegative] = 30
    normalisation: Literal["sinkhorn", "centering"] = "sinkhorn"
    sinkhorn_iterations: Annotated[int, AtLeast1] = 3
    center_momentum: Annotated[float, Probability] = 0.9


@dataclass
class TermConfig:
    enabled: bool = True
    weight: Annotated[float, NonNegative] = 1.0


@dataclass
class KnowledgeLossConfig:
    """Eq. 6. ``prototypes``: safetensors from ``dermino knowledge build`` ({"prototypes": (C,E)} plus
    class names in its metadata), ``"text"`` to embed the manifest's class names with the bundled
    text encoder, or ``"random"`` (tests/ablations: fixed random unit vectors)."""

    enabled: bool = True
    weight: Annotated[float, NonNegative] = 1.0
    prototypes: str = "text"
    vocabulary: str | None = None  # vocabulary file (dermino knowledge build) to normalise labels
    trainable: bool = False
    learnable_scale: bool = False
    init_scale: Annotated[float, Positive] = 1.0
    # head parametrisation (docs/knowledge.md): siglip | eq5 | projection (the pre-issue-11 head)
    head: Literal["siglip", "eq5", "projection"] = "siglip"
    init_temperature: Annotated[float, Positive] = 10.0  # siglip: starting temperature (learned)
    anchor_weight: Annotated[float, NonNegative] = 0.0  # trainable W: weight of mean ||W - W_init||^2 added to the knowledge term
    pooling: Literal["mean", "cls"] = "mean"  # prototypes="text": pool the text encoder's tokens by mean or cls
    merge_threshold: Annotated[float, Range(ge=-1, le=1)] = 0.93  # no vocabulary file: names merged at this cosine
    # held-out diagnostics (pretrain/knowledge_monitor.py): labelled manifests never trained on
    heldout: list[str] = field(default_factory=list)
    heldout_splits: list[str] = field(default_factory=lambda: ["val", "test"])
    heldout_every: Annotated[int, NonNegative] = 0  # steps; 0 = only at the end (when heldout is set)
    heldout_size: Annotated[int, NonNegative] = 0  # image side; 0 = crops.global_size
    heldout_max_images: Annotated[int, AtLeast1] = 2000


@dataclass
class GramLossConfig:
    """Gram anchoring (DINOv3; ``losses/gram.py``): the student's patch similarities follow a frozen
    Gram teacher's. Off by default; see docs/continued_pretraining.md for when to use it."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(lambda c: c.teacher != "initial" or c.refresh_every == 0,
             "teacher=initial keeps the starting weights: refresh_every must be 0"),
    )

    enabled: bool = False
    weight: Annotated[float, NonNegative] = 2.0
    start_step: Annotated[int, NonNegative] = 0  # the term counts from this optimizer step on
    # the Gram teacher: a frozen copy of the EMA teacher, taken at the start and again every
    # refresh_every steps ("ema_snapshot"), or the starting weights for the whole run ("initial":
    # continued pretraining anchors the patch structure of the model it started from)
    teacher: Literal["ema_snapshot", "initial"] = "ema_snapshot"
    refresh_every: Annotated[int, NonNegative] = 0  # steps between snapshots; 0 = never refresh
    remove_negatives: Literal["both", "target", "none"] = "both"  # clip negative similarities (DINOv3: both)
    # > crops.global_size: the Gram teacher sees the global crops resized to this side (high-resolution
    # targets), its patch grid resized back to the student's; 0 = the student's size
    target_size: Annotated[int, NonNegative] = 0


@dataclass
class LossesConfig:
    dino: DinoLossConfig = field(default_factory=DinoLossConfig)
    ibot: TermConfig = field(default_factory=TermConfig)
    koleo: TermConfig = field(default_factory=lambda: TermConfig(weight=0.1))
    knowledge: KnowledgeLossConfig = field(default_factory=KnowledgeLossConfig)
    gram: GramLossConfig = field(default_factory=GramLossConfig)


@dataclass
class OptimConfig:
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(lambda c: c.min_lr <= c.base_lr, "min_lr={c.min_lr:g} must be <= base_lr ({c.base_lr:g})"),
    )

    base_lr: Annotated[float, Positive] = 2e-3  # scaled by sqrt(global_batch / 1024)
    min_lr: Annotated[float, NonNegative] = 1e-6
    warmup_epochs: Annotated[float, NonNegative] = 10
    weight_decay: Annotated[float, NonNegative] = 0.04
    weight_decay_end: Annotated[float, NonNegative] = 0.2
    betas: Annotated[tuple[float, float], Each(UnitInterval)] = (0.9, 0.999)
    clip_grad: Annotated[float, NonNegative] = 3.0  # 0 = off
    patch_embed_lr_mult: Annotated[float, NonNegative] = 0.2
    layerwise_decay: Annotated[float, Range(gt=0, le=1)] = 1.0  # 1.0 = off
    freeze_last_layer_epochs: Annotated[float, NonNegative] = 1
    momentum_teacher: Annotated[float, Probability] = 0.992
    momentum_teacher_end: Annotated[float, Probability] = 1.0


@dataclass
class StageConfig:
    """From ``start`` (a share of the optimizer steps) to the next stage, train at these crop sizes
    (a high-resolution adaptation at the end of a run, as DINOv2/DINOv3 do: e.g. 224 -> 448)."""

    start: Annotated[float, Range(gt=0, lt=1)] = 0.9
    global_size: Annotated[int, AtLeast1] = 448
    local_size: Annotated[int, AtLeast1] = 196


def _stages_sorted(c: ScheduleConfig) -> bool:
    starts = [st.start for st in c.stages]
    return starts == sorted(starts) and len(set(starts)) == len(starts)


@dataclass
class ScheduleConfig:
    """Budget in images or steps (one must be set); batch_size is per process per micro-step."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(lambda c: c.budget_images is not None or c.budget_steps is not None,
             "set schedule.budget_images or schedule.budget_steps"),
        Rule(_stages_sorted, "schedule.stages must have distinct starts in increasing order"),
    )

    batch_size: Annotated[int, AtLeast1] = 64
    grad_accum: Annotated[int, AtLeast1] = 1
    # when set, batch_size x processes x grad_accum must equal it (the run refuses otherwise)
    global_batch: Annotated[int, AtLeast1] | None = None
    budget_images: Annotated[int, AtLeast1] | None = None
    budget_steps: Annotated[int, AtLeast1] | None = None
    # Continued pretraining (model.init_weights set): train only the DINO/iBOT/knowledge heads on
    # the frozen backbone for this many images first, then run the normal schedules. None: on
    # when model.init_weights is set (10 % of the budget, at most one epoch), 0: off.
    head_warmup_images: Annotated[int, NonNegative] | None = None
    # later parts of the budget at other crop sizes (position embeddings interpolate; schedules go on)
    stages: list[StageConfig] = field(default_factory=list)


@dataclass
class RunConfig:
    out_dir: str = "runs/pretrain"
    seed: int = 0
    device: Annotated[str, Device()] = "auto"  # auto | cpu | cuda | cuda:N (must exist here)
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    compile: bool = False
    threads: Annotated[int, AtLeast1] | None = None
    checkpoint_every: Annotated[int, AtLeast1] = 1000  # steps; the last step always checkpoints
    keep_checkpoints: Annotated[int, AtLeast1] = 2
    log_every: Annotated[int, AtLeast1] = 10
    monitor_every: Annotated[int, NonNegative] = 0  # steps; 0 = only at the end (if monitor manifests are set)
    max_bad_steps: Annotated[int, AtLeast1] = 5  # consecutive non-finite steps before giving up
    peak_tflops: Annotated[float, Positive] | None = None  # for MFU; None: guess from the device
    tensorboard: bool = False
    fsdp: bool = False  # under torchrun: shard student, teacher and optimizer state (FSDP2) instead of DDP
    progress: bool = True
    # collapse guard (needs the kNN monitor and model.init_weights: the start is the baseline):
    # stop when collapse_metric falls more than collapse_margin below its value at step 0 for
    # collapse_patience monitor evaluations in a row; 0 = only report
    # rankme: effective rank of the teacher's CLS embeddings of the monitor set (no labels needed);
    # dense_dice: the dense monitor's Dice (needs data.monitor_masks); gram_distance: the Gram
    # distance to the start, where LARGER is worse (stop when it rises above collapse_margin)
    collapse_metric: Literal["knn_macro_auroc", "knn_accuracy", "rankme", "dense_dice",
                             "gram_distance"] = "knn_macro_auroc"
    collapse_margin: Annotated[float, NonNegative] = 0.05
    collapse_patience: Annotated[int, NonNegative] = 3
    fast_step: bool = True  # device-side skip checks, values read every log_every steps (off: read every step)
    activation_checkpointing: bool = False  # recompute block activations in backward: less memory, ~30% slower
    # student's global and local crops in one packed forward (block-diagonal attention mask);
    # off by default: slower on CPU (docs/pretraining_speed.md)
    pack_crops: bool = False


@dataclass
class PretrainConfig:
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(lambda c: c.schedule.batch_size >= 2 or not c.losses.koleo.enabled,
             "schedule.batch_size={c.schedule.batch_size} must be >= 2 for the KoLeo loss (nearest neighbours)"),
        Rule(lambda c: all(st.global_size % c.crops.patch_size == 0 and st.local_size % c.crops.patch_size == 0
                           for st in c.schedule.stages),
             "schedule.stages: every global_size and local_size must be a multiple of crops.patch_size"),
        Rule(lambda c: c.run.collapse_metric != "dense_dice" or bool(c.data.monitor_masks),
             "run.collapse_metric=dense_dice needs data.monitor_masks (a manifest with lesion masks)"),
        Rule(lambda c: c.run.collapse_metric != "gram_distance" or c.data.monitor_gram_images > 0,
             "run.collapse_metric=gram_distance needs data.monitor_gram_images > 0"),
        Rule(lambda c: not (c.losses.gram.enabled and c.run.fsdp),
             "losses.gram (Gram anchoring) is not supported with run.fsdp yet: use DDP"),
    )

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)


def tiny_config(out_dir: str = "runs/tiny_test", **run_overrides) -> PretrainConfig:
    """The smallest config that still exercises every loss term (2-block width-64 ViT, 56/28 px
    crops, 256 prototypes, random knowledge prototypes): for tests and smoke checks on a CPU."""
    cfg = PretrainConfig()
    cfg.model = ModelConfig(
        arch="dermino_vit_tiny_14", depth=2, embed_dim=64, num_heads=2, drop_path_rate=0.1,
        heads=HeadConfig(out_dim=256, hidden_dim=64, bottleneck_dim=32),
    )
    cfg.crops = CropsConfig(global_size=56, local_size=28, n_local=2)
    cfg.losses.dino.warmup_teacher_temp_epochs = 1
    cfg.losses.knowledge.prototypes = "random"
    cfg.optim.warmup_epochs = 0.5
    cfg.optim.freeze_last_layer_epochs = 0
    cfg.schedule = ScheduleConfig(batch_size=4, budget_steps=4)
    cfg.run = RunConfig(out_dir=out_dir, device="cpu", precision="fp32", checkpoint_every=2, log_every=1,
                        progress=False, threads=1)
    for key, value in run_overrides.items():
        setattr(cfg.run, key, value)
    return cfg


def validate(cfg: PretrainConfig) -> None:
    """Fail on bad values before any data or model is loaded (one message per problem).

    Ranges, choices and cross-field rules are declared on the config classes and checked by
    :func:`dermino.config.check_config` (also run by ``load_config``); this adds what is not a
    property of the values but of this machine: the initial weights file must exist."""
    problems = config_problems(cfg)
    init = cfg.model.init_path
    if init is not None and not Path(init).is_file():
        problems.append(
            f"model.init_weights={cfg.model.init_weights!r}: file not found (download the weights there, pass "
            "model.init_weights=PATH, or model.init_weights=none to start from random weights on purpose)"
        )
    if problems:
        raise ConfigError("invalid pretraining config:\n  - " + "\n  - ".join(problems))
