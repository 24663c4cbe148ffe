"""Settings of a captioning run (``dermino caption train``), loaded from configs/caption/*.yaml.

Defaults are the paper's: AdamW, projector lr 4e-4, LoRA lr 8e-5, 2 epochs, a frozen encoder
and a frozen LM with LoRA. Paths are relative to the working directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from dermino.caption.model import CaptionerSpec
from dermino.config import AtLeast1, Checked, Device, NonEmpty, NonNegative, Range, Rule

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class CaptionConfig(Checked):
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(lambda c: c.epochs > 0 or c.max_steps > 0, "epochs or max_steps must be > 0"),
    )

    # manifests with a filled caption column (required)
    manifests: Annotated[list[str], NonEmpty()] = field(default_factory=list)
    model: CaptionerSpec = field(default_factory=CaptionerSpec)
    encoder_weights: str | None = None  # local dermino/DINOv2/timm checkpoint; None = random init
    image_size: Annotated[int, AtLeast1] = 224  # center-crop side fed to the encoder (multiple of its patch size)
    out: str = "runs/caption"
    epochs: Annotated[float, NonNegative] = 2.0
    max_steps: Annotated[int, NonNegative] = 0  # stop after this many optimizer steps (0 = the epochs decide)
    batch_size: Annotated[int, AtLeast1] = 8
    projector_lr: Annotated[float, NonNegative] = 4e-4
    lora_lr: Annotated[float, NonNegative] = 8e-5
    weight_decay: Annotated[float, NonNegative] = 0.0
    warmup_steps: Annotated[int, NonNegative] = 0
    grad_clip: Annotated[float, NonNegative] = 1.0
    # LLaVA-style alignment: this many steps first train the projector alone (the LM and its LoRA
    # adapters frozen), so the image tokens land where the LM reads them before LoRA starts to adapt
    align_steps: Annotated[int, NonNegative] = 0
    # balanced: every step draws images with probability inversely proportional to their diagnosis'
    # frequency, so the majority diagnosis' template cannot win by being the most common caption
    sampling: Literal["uniform", "balanced"] = "uniform"
    # folder for the frozen encoder's features (keyed by encoder weights, images, size and image tokens),
    # reused across runs and evaluations; "" = compute in memory each time
    feature_cache: str = ""
    # also train on one yes/no question per dermoscopic criterion of every annotated (PH2) training image
    vqa_training: bool = False
    max_caption_tokens: Annotated[int, Range(ge=2)] = 96
    max_new_tokens: Annotated[int, AtLeast1] = 64
    num_beams: Annotated[int, AtLeast1] = 1
    train_split: str = "train"
    test_split: str = "test"
    max_train: Annotated[int, NonNegative] = 0  # first N training pairs after a seeded shuffle (0 = all)
    max_test: Annotated[int, NonNegative] = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    device: Annotated[str, Device()] = "auto"
    seed: int = 0
    bootstrap: Annotated[int, NonNegative] = 1000
    # evaluation also captions each image from a different-diagnosis image's features (the grounding control)
    grounding_control: bool = True
    meteor: bool = True  # needs a Java runtime; skipped (and said so in the results) without one
    log_every: Annotated[int, AtLeast1] = 10
    progress: bool = True
