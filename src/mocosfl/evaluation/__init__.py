"""Evaluation of frozen encoders: feature extraction and the kNN classifier."""

from mocosfl.evaluation.features import extract_features
from mocosfl.evaluation.knn import knn_predict

__all__ = ["extract_features", "knn_predict"]
