"""Data: in-memory image sets, client partitions, batched MoCo v2 augmentation and the
federated data module (one federated batch per training step)."""

from .datamodule import (
    EvalImages,
    FederatedDataModule,
    FederatedStepDataset,
    StepSampler,
    eval_loader,
    pool_for_round,
    step_seed,
)
from .datasets import (
    DATASET_NAMES,
    DATASET_STATS,
    ImageSet,
    load_cifar,
    load_image_folder,
    load_image_set,
    make_synthetic,
)
from .partition import (
    PARTITION_KINDS,
    label_counts,
    make_partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from .transforms import EvalTransform, MoCoV2Augmentation, hsv_to_rgb, normalize, rgb_to_hsv

__all__ = [
    "DATASET_NAMES",
    "DATASET_STATS",
    "PARTITION_KINDS",
    "EvalImages",
    "EvalTransform",
    "FederatedDataModule",
    "FederatedStepDataset",
    "ImageSet",
    "MoCoV2Augmentation",
    "StepSampler",
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
    "pool_for_round",
    "rgb_to_hsv",
    "step_seed",
]
