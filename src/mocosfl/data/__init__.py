"""Data: in-memory image sets, client partitions, batched MoCo v2 augmentation and the
federated data module (one federated batch per training step)."""

from .cifar import load_cifar
from .datasets import DATASET_NAMES, load_image_set
from .eval_images import EvalImages, eval_loader
from .image_folder import load_image_folder
from .image_set import DATASET_STATS, ImageSet
from .module import FederatedDataModule, build_datamodule, plan_of
from .partition import (
    PARTITION_KINDS,
    label_counts,
    make_partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from .settings import DataSettings
from .stream import FederatedStepDataset, StepSampler, step_seed
from .synthetic import make_synthetic
from .transforms import MoCoV2Augmentation, hsv_to_rgb, normalize, rgb_to_hsv

__all__ = [
    "DATASET_NAMES",
    "DATASET_STATS",
    "PARTITION_KINDS",
    "DataSettings",
    "EvalImages",
    "FederatedDataModule",
    "FederatedStepDataset",
    "ImageSet",
    "MoCoV2Augmentation",
    "StepSampler",
    "build_datamodule",
    "eval_loader",
    "hsv_to_rgb",
    "label_counts",
    "load_cifar",
    "load_image_folder",
    "load_image_set",
    "make_partition",
    "make_synthetic",
    "normalize",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "plan_of",
    "rgb_to_hsv",
    "step_seed",
]
