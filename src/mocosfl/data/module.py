"""FederatedDataModule: loads a data set, partitions it among the clients of a
:class:`~mocosfl.sfl.plan.FederatedPlan` and serves one federated batch per training step
(:class:`~mocosfl.data.stream.FederatedStepDataset`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from mocosfl.errors import ConfigError
from mocosfl.sfl.plan import FederatedPlan

from .datasets import load_image_set
from .eval_images import EvalImages, eval_loader
from .image_set import NAMED_STATS, ImageSet, pixel_stats, saved_stats
from .partition import label_counts, make_partition
from .settings import DataSettings
from .stream import FederatedStepDataset, StepSampler
from .transforms import MoCoV2Augmentation

__all__ = ["FederatedDataModule", "build_datamodule", "plan_of"]


def plan_of(config: Mapping[str, Any]) -> FederatedPlan:
    """The federated plan of a run config: its ``sfl`` group, pools drawn with ``data.seed``
    (the seed of the partition and the streams too)."""
    return FederatedPlan.from_config(config["sfl"], seed=config["data"]["seed"])


def build_datamodule(config: Mapping[str, Any], **overrides: Any) -> FederatedDataModule:
    """The data module of a run config (``data`` group, with ``overrides``) and its plan, its
    settings checked, not yet set up."""
    data = config["data"]
    if isinstance(data, DictConfig):  # resolved within the whole config: data.* links outside
        data = OmegaConf.to_container(data, resolve=True)
    plan = plan_of(config)
    settings = {**data, **overrides}
    # Called directly rather than through hydra.utils.instantiate, which would wrap a bad
    # setting's one-line ConfigError in a multi-line error of its own.
    return hydra.utils.get_class(settings.pop("_target_"))(plan=plan, **settings)


class FederatedDataModule(L.LightningDataModule):
    """Loads a data set, holds out a validation split, partitions the rest among clients and
    serves one federated batch per training step.

    ``data`` are the ``data`` config group's values; ``settings`` (:class:`DataSettings`) holds
    them, checked when the module is built. ``setup()`` (idempotent) loads the train and test
    splits (:func:`load_image_set`), holds out the validation split and keeps the clients' share
    of the rest (:meth:`DataSettings.hold_out`), and gives that share to the clients
    (:meth:`make_training_stream`). A problem that depends on the data raises
    :class:`ConfigError` there, before training. ``plan``
    (:class:`~mocosfl.sfl.plan.FederatedPlan`) says which clients train at which step; after
    ``setup()`` its code epoch is known (:meth:`FederatedPlan.with_client0`).

    ``train_dataloader()`` yields the items of the training stream through a
    :class:`StepSampler` that starts at ``trainer.global_step`` (0 when not attached), so a run
    resumed mid-epoch gets exactly the batches it would have got. ``eval_dataloader(split)``
    yields normalised, unaugmented ``(images, labels)`` of ``train`` (the images actually used for
    training), ``val`` or ``test``, in a fixed order.

    ``settings.stats`` names the normalisation statistics: one of :data:`NAMED_STATS`, or
    ``computed`` (:func:`pixel_stats` of the whole training split, in ``setup()``). ``mean`` /
    ``std`` hold the values in use (None before ``setup()`` when computed); :meth:`state_dict`
    stores them, so that a checkpoint is evaluated with the values it was trained with
    (:meth:`use_saved_stats`).
    """

    # True: the clients train on the training split itself, partitioned, so its size alone
    # gives their images and the epoch. A subclass that streams other images says False.
    partitions_train_split = True

    def __init__(self, *, plan: FederatedPlan, **data: Any) -> None:
        super().__init__()
        self.settings = DataSettings(**data)
        self._configured_plan = plan
        self.plan = plan  # its code epoch known after setup()
        self.mean, self.std = NAMED_STATS.get(self.settings.stats, (None, None))
        self.train_set: ImageSet | None = None
        self.test_set: ImageSet | None = None
        self.train_indices: np.ndarray | None = None
        self.val_indices: np.ndarray | None = None
        self.client_parts: list[np.ndarray] | None = None
        self._step_dataset: Dataset | None = None

    @property
    def image_size(self) -> int:
        """Side ``S`` of the square images it serves."""
        return self.settings.image_size

    # -- setup ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._step_dataset is not None:
            return  # Lightning calls it once per stage
        s = self.settings
        train, test = (
            load_image_set(s.name, s.root, split, s.download, s.image_size, s.synthetic)
            for split in ("train", "test")
        )
        for split, images in (("train", train), ("test", test)):
            if tuple(images.images.shape[1:]) != (3, s.image_size, s.image_size):
                raise ConfigError(
                    f"{s.name} {split} images have shape {tuple(images.images.shape[1:])}, "
                    f"expected (3, {s.image_size}, {s.image_size}); check data.image_size"
                )
        val_idx, train_idx = s.hold_out(len(train), self.plan.num_clients)
        if self.mean is None:  # data.stats=computed, and no checkpoint's values (use_saved_stats)
            self.mean, self.std = pixel_stats(train.images)
        self.train_set, self.test_set = train, test
        self.train_indices, self.val_indices = train_idx, val_idx
        self.client_parts, self._step_dataset = self.make_training_stream()
        share = self.client_parts[0].shape[0]  # none: the code epoch is left to Lightning's
        self.plan = self._configured_plan.with_client0(share) if share else self._configured_plan

    def make_training_stream(self) -> tuple[list[np.ndarray], Dataset]:
        """``(client_parts, stream)``: each client's indices into the training split and the
        stream of training steps, built at the end of ``setup()`` (splits and statistics known).

        Here ``train_indices`` partitioned among the plan's clients (:func:`make_partition` with
        ``settings.partition``, ``classes_per_client``, ``dirichlet_alpha`` and ``seed``) in a
        :class:`FederatedStepDataset`. A subclass that trains on other images returns its own
        stream, with the members of :class:`FederatedStepDataset` that the module reads:
        items, ``warm_up``, ``shard``, ``steps_per_epoch`` and ``client_sizes``.
        """
        s = self.settings
        local = make_partition(
            s.partition,
            self.train_set.labels.numpy()[self.train_indices],
            self.plan.num_clients,
            seed=s.seed,
            classes_per_client=s.classes_per_client,
            dirichlet_alpha=s.dirichlet_alpha,
        )
        parts = [self.train_indices[p] for p in local]
        if min(p.shape[0] for p in parts) < 1:
            raise ConfigError(
                f"the {s.partition} partition left a client without images; lower "
                "sfl.num_clients or change the partition settings"
            )
        augmentation = self.make_augmentation(self.mean, self.std)
        stream = FederatedStepDataset(
            self.train_set.images,
            parts,
            self._configured_plan,
            seed=s.seed,
            augmentation=augmentation,
        )
        return parts, stream

    def _require_setup(self) -> None:
        if self._step_dataset is None:
            raise RuntimeError("call FederatedDataModule.setup() first")

    def make_augmentation(
        self, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> MoCoV2Augmentation:
        """The MoCo v2 augmentation of this data (``image_size``, ``blur``), normalising with
        ``mean`` / ``std``."""
        return MoCoV2Augmentation(self.image_size, mean, std, blur=self.settings.blur)

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
        """Steps of an epoch of the training stream."""
        return self.step_dataset().steps_per_epoch

    @property
    def client_sizes(self) -> np.ndarray:
        """int64 ``[num_clients]``: the images each client trains on."""
        return self.step_dataset().client_sizes

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

    def use_saved_stats(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Normalise with the statistics of a checkpoint's data state (:func:`saved_stats`)
        instead of those ``settings.stats`` gives, so that evaluation and the attack see the
        images as training did. Before ``setup()``, which builds the augmentation with them."""
        if self._step_dataset is not None:
            raise RuntimeError("call use_saved_stats() before setup()")
        self.mean, self.std = saved_stats(state_dict)

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
        saved = saved_stats(state_dict)
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

    def step_dataset(self) -> Dataset:
        """The training stream (:meth:`make_training_stream`): item ``t`` is step ``t``."""
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
            num_workers=self.settings.num_workers,
            persistent_workers=False,
        )

    def eval_dataloader(self, split: str) -> DataLoader:
        """Normalised, unaugmented ``(images, labels)`` batches of a split, in a fixed order
        (``eval_batch_size`` per batch; ``len(loader.dataset)`` is the number of images). Of
        ``train``: its ``data.eval_train_images`` subset when set (``DataSettings.eval_subset``)."""
        idx = self.split_indices(split)
        if split == "train":
            idx = self.settings.eval_subset(idx)
        if idx.shape[0] == 0:
            raise ConfigError(
                f"the {split} split is empty (data.val_images=0?); set data.val_images > 0"
            )
        source = self.test_set if split == "test" else self.train_set
        dataset = EvalImages(source.images, source.labels, idx, self.mean, self.std)
        return eval_loader(dataset, self.settings.eval_batch_size)
