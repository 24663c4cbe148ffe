"""Settings of a captioning run (``dermino caption train``), loaded from configs/caption/*.yaml.

Defaults are the paper's: AdamW, projector lr 4e-4, LoRA lr 8e-5, 2 epochs, a frozen encoder
and a frozen LM with LoRA. Paths are relative to the working directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dermino.caption.model import CaptionerSpec

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class CaptionConfig:
    manifests: list[str] = field(default_factory=list)  # manifests with a filled caption column
    model: CaptionerSpec = field(default_factory=CaptionerSpec)
    encoder_weights: str | None = None  # local dermino/DINOv2/timm checkpoint; None = random init
    image_size: int = 224  # center-crop side fed to the encoder (multiple of its patch size)
    out: str = "runs/caption"
    epochs: float = 2.0
    max_steps: int = 0  # stop after this many optimizer steps (0 = the epochs decide)
    batch_size: int = 8
    projector_lr: float = 4e-4
    lora_lr: float = 8e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    max_caption_tokens: int = 96
    max_new_tokens: int = 64
    num_beams: int = 1
    train_split: str = "train"
    test_split: str = "test"
    max_train: int = 0  # first N training pairs after a seeded shuffle (0 = all)
    max_test: int = 0
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    device: str = "auto"
    seed: int = 0
    bootstrap: int = 1000
    meteor: bool = True  # needs a Java runtime; skipped (and said so in the results) without one
    log_every: int = 10
    progress: bool = True

    def validate(self) -> None:
        self.model.validate()
        if not self.manifests:
            raise ValueError("caption config: 'manifests' is required (manifests with a caption column)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"caption config: precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("caption config: epochs or max_steps must be > 0")
        if self.batch_size < 1 or self.image_size < 1 or self.max_caption_tokens < 2 or self.max_new_tokens < 1:
            raise ValueError("caption config: batch_size, image_size, max_new_tokens must be >= 1, "
                             "max_caption_tokens >= 2")
        if self.projector_lr < 0 or self.lora_lr < 0:
            raise ValueError("caption config: learning rates must be >= 0")
        if self.num_beams < 1:
            raise ValueError(f"caption config: num_beams must be >= 1, got {self.num_beams}")
