"""FederatedDataModule: loads a data set, partitions it among the clients of a
:class:`~mocosfl.sfl.plan.FederatedPlan` and serves one federated batch per training step
(:class:`~mocosfl.data.stream.FederatedStepDataset`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from mocosfl.errors import ConfigError
from mocosfl.sfl.plan import FederatedPlan

from .datasets import DATASET_NAMES, load_image_set
from .eval_images import EvalImages, eval_loader
from .image_set import DEFAULT_STATS, NAMED_STATS, STATS_CHOICES, ImageSet, Stats, pixel_stats
from .partition import PARTITION_KINDS, label_counts, make_partition
from .stream import FederatedStepDataset, StepSampler
from .transforms import BLUR_KINDS, MoCoV2Augmentation

__all__ = ["FederatedDataModule", "build_datamodule", "plan_of"]


def plan_of(config: Mapping[str, Any]) -> FederatedPlan:
    """The federated plan of a run config: its ``sfl`` group, pools drawn with ``data.seed``
    (the seed of the partition and the streams too)."""
    return FederatedPlan.from_config(config["sfl"], seed=config["data"]["seed"])


def build_datamodule(config: Mapping[str, Any], **overrides: Any) -> FederatedDataModule:
    """The data module of a run config (``data`` group, with ``overrides``) and its plan, not yet
    set up."""
    data = config["data"]
    if isinstance(data, DictConfig):  # resolved within the whole config: data.* links outside
        data = OmegaConf.to_container(data, resolve=True)
    return hydra.utils.instantiate({**data, **overrides}, plan=plan_of(config), _convert_="object")


class FederatedDataModule(L.LightningDataModule):
    """Loads a data set, holds out a validation split, partitions the rest among clients and
    serves one federated batch per training step.

    ``setup()`` (idempotent) checks every setting, then: loads the train and test splits
    (:func:`load_image_set`); holds out ``min(val_images, half the training split)`` seeded random
    training images as the validation split (a warning says when it caps); keeps a seeded random
    ``max_train_images`` of the rest if set; and partitions what remains among the plan's clients
    (:func:`make_partition` with ``partition``, ``classes_per_client``, ``dirichlet_alpha`` and
    ``seed``). Every user-fixable problem raises :class:`ConfigError` there, before training.
    ``plan`` (:class:`~mocosfl.sfl.plan.FederatedPlan`) says which clients train at which step;
    after ``setup()`` its code epoch is known (:meth:`FederatedPlan.with_client0`).

    ``train_dataloader()`` yields the dicts of :class:`FederatedStepDataset` through a
    :class:`StepSampler` that starts at ``trainer.global_step`` (0 when not attached), so a run
    resumed mid-epoch gets exactly the batches it would have got. ``eval_dataloader(split)``
    yields normalised, unaugmented ``(images, labels)`` of ``train`` (the images actually used for
    training), ``val`` or ``test``, in a fixed order.

    ``stats`` names the normalisation statistics: one of :data:`NAMED_STATS`, or ``computed``
    (:func:`pixel_stats` of the whole training split, in ``setup()``); None takes the data set's
    own (:data:`DEFAULT_STATS`). ``mean`` / ``std`` hold the values in use (None before
    ``setup()`` when computed); :meth:`state_dict` stores them, so that a checkpoint is evaluated
    with the values it was trained with (:meth:`use_saved_stats`). ``blur`` is the augmentation's
    blur strength (one of :data:`BLUR_KINDS`, see :class:`MoCoV2Augmentation`).
    """

    def __init__(
        self,
        *,
        plan: FederatedPlan,
        name: str,
        root: str,
        download: bool = True,
        image_size: int = 32,
        max_train_images: int | None = None,
        val_images: int = 5000,
        partition: str = "iid",
        classes_per_client: int = 2,
        dirichlet_alpha: float = 0.5,
        seed: int = 1234,
        num_workers: int = 2,
        eval_batch_size: int = 256,
        synthetic: dict | None = None,
        blur: str = "pil",
        stats: str | None = None,
    ) -> None:
        super().__init__()
        self.name = str(name).lower()
        self.root = str(root)
        self.download = bool(download)
        self.image_size = int(image_size)
        self.max_train_images = None if max_train_images is None else int(max_train_images)
        self.val_images = int(val_images)
        self.partition = str(partition).lower()
        self.classes_per_client = int(classes_per_client)
        self.dirichlet_alpha = float(dirichlet_alpha)
        self._configured_plan = plan
        self.plan = plan  # its code epoch known after setup()
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.eval_batch_size = int(eval_batch_size)
        self.synthetic = dict(synthetic) if synthetic else None
        self.blur = str(blur).lower()
        default_stats = DEFAULT_STATS.get(self.name, "computed")
        self.stats = str(default_stats if stats is None else stats).lower()
        # None until setup() for computed statistics
        self.mean, self.std = NAMED_STATS.get(self.stats, (None, None))
        self.train_set: ImageSet | None = None
        self.test_set: ImageSet | None = None
        self.train_indices: np.ndarray | None = None
        self.val_indices: np.ndarray | None = None
        self.client_parts: list[np.ndarray] | None = None

    # -- checks -----------------------------------------------------------------------------
    def split_sizes(self, n: int) -> tuple[int, int]:
        """(validation images, client training images) taken from a training split of ``n``
        images: ``val_images`` held out (at most half), the rest capped at ``max_train_images``."""
        n_val = min(self.val_images, n // 2)
        rest = n - n_val
        return n_val, rest if self.max_train_images is None else min(rest, self.max_train_images)

    def check_settings(self) -> None:
        """Everything that can be checked before loading any data."""
        if self.name not in DATASET_NAMES:
            raise ConfigError(
                f"unknown data.name={self.name!r}; use one of {', '.join(DATASET_NAMES)} "
                "(data=<name>)"
            )
        if self.partition not in PARTITION_KINDS:
            raise ConfigError(
                f"unknown data.partition={self.partition!r}; use one of "
                f"{', '.join(PARTITION_KINDS)}"
            )
        if self.blur not in BLUR_KINDS:
            raise ConfigError(
                f"unknown data.blur={self.blur!r}; use kernel10 (a Gaussian of 0.1 x image size "
                "taps) or pil (the strength of PIL's GaussianBlur, as in the original)"
            )
        if self.stats not in STATS_CHOICES:
            raise ConfigError(
                f"unknown data.stats={self.stats!r}; use {', '.join(NAMED_STATS)} (their fixed "
                "values) or computed (from the training split)"
            )
        checks = [
            (self.val_images >= 0, f"data.val_images={self.val_images}; use 0 or more"),
            (
                self.max_train_images is None or self.max_train_images >= 1,
                f"data.max_train_images={self.max_train_images}; use a positive number or null",
            ),
            (
                self.classes_per_client >= 1,
                f"data.classes_per_client={self.classes_per_client}; use at least 1",
            ),
            (
                self.dirichlet_alpha > 0,
                f"data.dirichlet_alpha={self.dirichlet_alpha}; use a positive value",
            ),
            (self.num_workers >= 0, f"data.num_workers={self.num_workers}; use 0 or more"),
            (
                self.eval_batch_size >= 1,
                f"data.eval_batch_size={self.eval_batch_size}; use at least 1",
            ),
            (self.image_size >= 8, f"data.image_size={self.image_size}; use at least 8"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    # -- setup ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.client_parts is not None:
            return  # idempotent
        self.check_settings()
        train = load_image_set(
            self.name, self.root, "train", self.download, self.image_size, self.synthetic
        )
        test = load_image_set(
            self.name, self.root, "test", self.download, self.image_size, self.synthetic
        )
        for split, s in (("train", train), ("test", test)):
            if tuple(s.images.shape[1:]) != (3, self.image_size, self.image_size):
                raise ConfigError(
                    f"{self.name} {split} images have shape {tuple(s.images.shape[1:])}, "
                    f"expected (3, {self.image_size}, {self.image_size}); check data.image_size"
                )
        n = len(train)
        n_val, n_train = self.split_sizes(n)
        if n_val < self.val_images:
            warnings.warn(
                f"data.val_images={self.val_images} capped to {n_val} (half of the {n} "
                f"{self.name} training images)",
                stacklevel=2,
            )
        num_clients = self.plan.num_clients
        if n - n_val < num_clients:
            raise ConfigError(
                f"{self.name} has {n} training images; after holding out {n_val} for "
                f"validation, {n - n_val} are left for {num_clients} clients; lower "
                "sfl.num_clients or data.val_images"
            )
        perm = np.random.default_rng([self.seed, 101]).permutation(n).astype(np.int64)
        val_idx, rest = np.sort(perm[:n_val]), perm[n_val:]
        if n_train < rest.shape[0]:
            rest = np.random.default_rng([self.seed, 102]).permutation(rest)
            rest = rest[:n_train]
        train_idx = np.sort(rest)
        if train_idx.shape[0] < num_clients:
            raise ConfigError(
                f"data.max_train_images={self.max_train_images} leaves {train_idx.shape[0]} "
                f"training images for {num_clients} clients; raise data.max_train_images or "
                "lower sfl.num_clients"
            )
        labels = train.labels.numpy()
        local = make_partition(
            self.partition,
            labels[train_idx],
            num_clients,
            seed=self.seed,
            classes_per_client=self.classes_per_client,
            dirichlet_alpha=self.dirichlet_alpha,
        )
        parts = [train_idx[p] for p in local]
        if min(p.shape[0] for p in parts) < 1:
            raise ConfigError(
                f"the {self.partition} partition left a client without images; lower "
                "sfl.num_clients or change the partition settings"
            )
        if self.mean is None:  # data.stats=computed, and no checkpoint's values (use_saved_stats)
            self.mean, self.std = pixel_stats(train.images)
        self.train_set, self.test_set = train, test
        self.train_indices, self.val_indices = train_idx, val_idx
        self.client_parts = parts
        self._step_dataset = self._make_step_dataset()

    def _make_step_dataset(self) -> FederatedStepDataset:
        """The training stream of ``client_parts``; fixes the plan's code epoch to theirs."""
        self.plan = self._configured_plan.with_client0(self.client_parts[0].shape[0])
        return FederatedStepDataset(
            self.train_set.images,
            self.client_parts,
            self.plan,
            seed=self.seed,
            augmentation=self.make_augmentation(self.mean, self.std),
        )

    def _require_setup(self) -> None:
        if self.client_parts is None:
            raise RuntimeError("call FederatedDataModule.setup() first")

    def make_augmentation(
        self, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> MoCoV2Augmentation:
        """The MoCo v2 augmentation of this data (``image_size``, ``blur``), normalising with
        ``mean`` / ``std``."""
        return MoCoV2Augmentation(self.image_size, mean, std, blur=self.blur)

    # -- sizes ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        self._require_setup()
        return self.train_set.num_classes

    @property
    def classes(self) -> list[str]:
        self._require_setup()
        return list(self.train_set.classes)

    @property
    def num_train_images(self) -> int:
        self._require_setup()
        return int(self.train_indices.shape[0])

    @property
    def num_val_images(self) -> int:
        self._require_setup()
        return int(self.val_indices.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_train_images / self.plan.server_batch_size)

    @property
    def client_sizes(self) -> np.ndarray:
        self._require_setup()
        return np.array([p.shape[0] for p in self.client_parts], dtype=np.int64)

    def label_counts(self) -> np.ndarray:
        """``[num_clients, num_classes]`` label histogram of each client's partition."""
        self._require_setup()
        return label_counts(self.train_set.labels.numpy(), self.client_parts, self.num_classes)

    def partition_state(self) -> dict[str, np.ndarray]:
        """Arrays that pin the split, for ``np.savez``: ``train_indices``, ``val_indices``
        (indices into the training split), ``client_indices`` (all clients' indices,
        concatenated) and ``client_offsets`` ([num_clients + 1]; client c holds
        ``client_indices[client_offsets[c]:client_offsets[c + 1]]``)."""
        self._require_setup()
        offsets = np.concatenate([[0], np.cumsum(self.client_sizes)]).astype(np.int64)
        return {
            "train_indices": self.train_indices.copy(),
            "val_indices": self.val_indices.copy(),
            "client_indices": np.concatenate(self.client_parts).astype(np.int64),
            "client_offsets": offsets,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The partition and the normalisation statistics in use (``mean``, ``std``: float64
        ``[3]``), stored in every checkpoint (as tensors: loads with weights_only)."""
        state = {k: torch.from_numpy(v) for k, v in self.partition_state().items()}
        stats = {"mean": self.mean, "std": self.std}
        return {**state, **{k: torch.tensor(v, dtype=torch.float64) for k, v in stats.items()}}

    @staticmethod
    def saved_stats(state_dict: dict[str, torch.Tensor]) -> Stats:
        """The ``(mean, std)`` a :meth:`state_dict` holds. A checkpoint written before they were
        stored normalised every data set with CIFAR-10's (then the only statistics)."""
        if "mean" not in state_dict:
            return NAMED_STATS["cifar10"]
        return tuple(state_dict["mean"].tolist()), tuple(state_dict["std"].tolist())

    def use_saved_stats(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Normalise with the statistics of a checkpoint's data state (:meth:`saved_stats`)
        instead of those ``stats`` gives, so that evaluation and the attack see the images as
        training did. Before ``setup()``, which builds the augmentation with them."""
        if self.client_parts is not None:
            raise RuntimeError("call use_saved_stats() before setup()")
        self.mean, self.std = self.saved_stats(state_dict)

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Refuse to resume on a partition or normalisation statistics other than the
        checkpoint's (other data, seed or data.stats)."""
        for key, value in self.partition_state().items():
            saved = state_dict.get(key)
            if saved is None or not np.array_equal(saved.numpy(), value):
                raise ConfigError(
                    f"the checkpoint's data partition ({key}) differs from the one rebuilt from "
                    "this config: resume with the run's own data, seed and sfl/data settings"
                )
        saved = self.saved_stats(state_dict)
        if saved != (self.mean, self.std):
            shown = [tuple(round(v, 4) for v in part) for part in (*saved, self.mean, self.std)]
            raise ConfigError(
                f"the checkpoint was trained with normalisation statistics mean={shown[0]} "
                f"std={shown[1]}, this config gives mean={shown[2]} std={shown[3]}: resume with "
                "the run's data.stats (data.stats=cifar10 for a checkpoint from before data.stats)"
            )

    # -- split access -------------------------------------------------------------------------
    def split_indices(self, split: str) -> np.ndarray:
        """Indices of ``train`` (images actually used) / ``val`` (into the training set) or
        ``test`` (all of the test set)."""
        self._require_setup()
        if split == "train":
            return self.train_indices
        if split == "val":
            return self.val_indices
        if split == "test":
            return np.arange(len(self.test_set), dtype=np.int64)
        raise ConfigError(f"unknown split {split!r}; use 'train', 'val' or 'test'")

    def split_images(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(uint8 images [n, 3, S, S], int64 labels [n])`` of a split, not augmented."""
        idx = torch.from_numpy(self.split_indices(split))
        source = self.test_set if split == "test" else self.train_set
        return source.images[idx], source.labels[idx]

    # -- loaders --------------------------------------------------------------------------------
    def _start_step(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_step) if trainer is not None else 0

    def step_dataset(self) -> FederatedStepDataset:
        self._require_setup()
        return self._step_dataset

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # several processes: each loads its share of every pool
            self._step_dataset.shard = (trainer.global_rank, trainer.world_size)
        return DataLoader(
            self._step_dataset,
            batch_size=None,
            sampler=StepSampler(
                self.steps_per_epoch, self._start_step, prepare=self._step_dataset.warm_up
            ),
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def eval_dataloader(self, split: str) -> DataLoader:
        """Normalised, unaugmented ``(images, labels)`` batches of a split, in a fixed order
        (``eval_batch_size`` per batch; ``len(loader.dataset)`` is the number of images)."""
        idx = self.split_indices(split)
        if idx.shape[0] == 0:
            raise ConfigError(
                f"the {split} split is empty (data.val_images=0?); set data.val_images > 0"
            )
        source = self.test_set if split == "test" else self.train_set
        dataset = EvalImages(source.images, source.labels, idx, self.mean, self.std)
        return eval_loader(dataset, self.eval_batch_size)
