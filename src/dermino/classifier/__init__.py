"""A deployable diagnosis classifier: frozen backbone + linear head + calibration temperature."""

from dermino.classifier.calibration import expected_calibration_error, fit_temperature, reliability_bins
from dermino.classifier.model import Classifier, load_classifier, save_classifier

__all__ = [
    "Classifier",
    "expected_calibration_error",
    "fit_temperature",
    "load_classifier",
    "reliability_bins",
    "save_classifier",
]
