"""The pretraining config tree: one dataclass per section, defaults = the paper recipe (ViT-B/14).

Load with ``dermino.config.load_config(PretrainConfig, path, overrides)``; every ablation row
is then an override such as ``losses.knowledge.enabled=false``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dermino.data.masking import MaskingConfig
from dermino.data.transforms import CropsConfig
from dermino.models.heads import HeadConfig


@dataclass
class ModelConfig:
    """Backbone by registered name, plus architecture overrides (None keeps the named size)."""

    arch: str = "dermino_vit_base_14"
    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    drop_path_rate: float = 0.4
    num_register_tokens: int = 0
    layerscale_init: float | None = 1e-5
    init_weights: str | None = None  # local checkpoint to start the student (and teacher) from
    heads: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class DataConfig:
    """Which manifests to pretrain on. ``"sample"`` means the bundled sample (written to out/manifests)."""

    manifests: list[str] = field(default_factory=lambda: ["sample"])
    splits: list[str] = field(default_factory=lambda: ["train", "none"])  # rows used for pretraining
    source_weights: dict[str, float] = field(default_factory=dict)  # empty: uniform over images
    on_bad_image: str = "skip"  # raise | skip (logged, replaced by another image)
    num_workers: int = 0
    epoch_size: int | None = None  # images per "epoch" for epoch-based schedules; None: dataset size
    cache: str | None = None  # folder from `dermino data cache`: read pre-resized images from its shards
    # periodic kNN monitor (None: off): memory bank = split "train" rows of monitor_train,
    # queries = split "val" rows of monitor_val (all rows when a manifest has no such split)
    monitor_train: str | None = None
    monitor_val: str | None = None
    monitor_size: int = 224


@dataclass
class DinoLossConfig:
    enabled: bool = True
    weight: float = 1.0
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 30
    normalisation: str = "sinkhorn"  # sinkhorn | centering
    sinkhorn_iterations: int = 3
    center_momentum: float = 0.9


@dataclass
class TermConfig:
    enabled: bool = True
    weight: float = 1.0


@dataclass
class KnowledgeLossConfig:
    """Eq. 6. ``prototypes``: safetensors from ``dermino knowledge build`` ({"prototypes": (C,E)} plus
    class names in its metadata), ``"text"`` to embed the manifest's class names with the bundled
    text encoder, or ``"random"`` (tests/ablations: fixed random unit vectors)."""

    enabled: bool = True
    weight: float = 1.0
    prototypes: str = "text"
    vocabulary: str | None = None  # vocabulary file (dermino knowledge build) to normalise labels
    trainable: bool = False
    learnable_scale: bool = False
    init_scale: float = 1.0


@dataclass
class LossesConfig:
    dino: DinoLossConfig = field(default_factory=DinoLossConfig)
    ibot: TermConfig = field(default_factory=TermConfig)
    koleo: TermConfig = field(default_factory=lambda: TermConfig(weight=0.1))
    knowledge: KnowledgeLossConfig = field(default_factory=KnowledgeLossConfig)


@dataclass
class OptimConfig:
    base_lr: float = 2e-3  # scaled by sqrt(global_batch / 1024)
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0
    patch_embed_lr_mult: float = 0.2
    layerwise_decay: float = 1.0  # 1.0 = off
    freeze_last_layer_epochs: float = 1
    momentum_teacher: float = 0.992
    momentum_teacher_end: float = 1.0


@dataclass
class ScheduleConfig:
    """Budget in images or steps (one must be set); batch_size is per process per micro-step."""

    batch_size: int = 64
    grad_accum: int = 1
    budget_images: int | None = None
    budget_steps: int | None = None


@dataclass
class RunConfig:
    out_dir: str = "runs/pretrain"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "bf16"  # fp32 | bf16 | fp16
    compile: bool = False
    threads: int | None = None
    checkpoint_every: int = 1000  # steps; the last step always checkpoints
    keep_checkpoints: int = 2
    log_every: int = 10
    monitor_every: int = 0  # steps; 0 = only at the end (if monitor manifests are set)
    max_bad_steps: int = 5  # consecutive non-finite steps before giving up
    peak_tflops: float | None = None  # for MFU; None: guess from the device
    tensorboard: bool = False
    fsdp: bool = False  # under torchrun: shard student, teacher and optimizer state (FSDP2) instead of DDP
    progress: bool = True
    fast_step: bool = True  # device-side skip checks, values read every log_every steps (off: read every step)
    activation_checkpointing: bool = False  # recompute block activations in backward: less memory, ~30% slower


@dataclass
class PretrainConfig:
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
    """Fail on bad values before any data or model is loaded (one message per problem)."""
    problems = []
    if cfg.run.precision not in ("fp32", "bf16", "fp16"):
        problems.append(f"run.precision must be fp32, bf16 or fp16, got {cfg.run.precision!r}")
    if cfg.losses.dino.normalisation not in ("sinkhorn", "centering"):
        problems.append(f"losses.dino.normalisation must be sinkhorn or centering, got {cfg.losses.dino.normalisation!r}")
    if cfg.data.on_bad_image not in ("raise", "skip"):
        problems.append(f"data.on_bad_image must be raise or skip, got {cfg.data.on_bad_image!r}")
    if not (cfg.schedule.budget_steps or cfg.schedule.budget_images):
        problems.append("set schedule.budget_images or schedule.budget_steps")
    if cfg.schedule.batch_size < 2 and cfg.losses.koleo.enabled:
        problems.append("schedule.batch_size must be >= 2 for the KoLeo loss (nearest neighbours)")
    for name in ("global_size", "local_size"):
        size = getattr(cfg.crops, name)
        if size <= 0 or size % cfg.crops.patch_size:
            problems.append(f"crops.{name}={size} must be a positive multiple of {cfg.crops.patch_size}")
    if cfg.run.checkpoint_every <= 0 or cfg.run.log_every <= 0:
        problems.append("run.checkpoint_every and run.log_every must be > 0")
    if problems:
        raise ValueError("invalid pretraining config:\n  - " + "\n  - ".join(problems))
