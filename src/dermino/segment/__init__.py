"""dermino.segment: lesion segmentation heads on a frozen backbone (DermINO section 4.2.3)."""

from dermino.segment.config import AugmentConfig, SegmentConfig
from dermino.segment.predict import evaluate_segmentation, load_run, predict_images
from dermino.segment.train import train_segmentation

__all__ = [
    "AugmentConfig",
    "SegmentConfig",
    "evaluate_segmentation",
    "load_run",
    "predict_images",
    "train_segmentation",
]
