"""Evaluation of frozen encoders: feature extraction, the kNN classifier and the probe."""

from mocosfl.evaluation.features import extract_features
from mocosfl.evaluation.knn import knn_predict, knn_top1
from mocosfl.evaluation.linear import (
    ProbeResult,
    ProbeSettings,
    accuracy,
    balanced_subset,
    train_probe,
)

__all__ = [
    "ProbeResult",
    "ProbeSettings",
    "accuracy",
    "balanced_subset",
    "extract_features",
    "knn_predict",
    "knn_top1",
    "train_probe",
]
