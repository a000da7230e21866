"""Data of TAResSFL stage 1: one expert client that trains on auxiliary plus target images.

Each step takes a batch of auxiliary images and a batch of the expert's share of the target data
set (docs/paper.md, "TAResSFL") and serves them as one client's batch, auxiliary images first.
Each image set is augmented and normalised with its own statistics, and the [0, 1] pixels of the
query views, which the simulated attacker must reconstruct, are recovered with those same
statistics (the original de-normalises auxiliary images with the target's: docs/differences.md,
"auxiliary-set statistics").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mocosfl.data.datasets import load_image_set
from mocosfl.data.image_set import DATASET_STATS, ImageSet
from mocosfl.data.module import FederatedDataModule
from mocosfl.data.stream import FederatedStepDataset
from mocosfl.errors import ConfigError, check_all

Stats = tuple[Sequence[float], Sequence[float]]  # (mean, std) per channel

_AUX_SEED_STREAM = 53  # the auxiliary stream's seed is derived from the run's with this
_AUX_KEYS = ("name", "root", "download", "classes", "batch_size", "synthetic")


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised float [..., 3, H, W] -> [0, 1] pixels (the inverse of ``normalize``)."""
    shape = (3, 1, 1)
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images * s + m).clamp_(0.0, 1.0)


def in_classes(
    labels: torch.Tensor, indices: np.ndarray, classes: Sequence[int] | None
) -> np.ndarray:
    """The ``indices`` whose label is in ``classes`` (all of them for None)."""
    if classes is None:
        return indices
    return indices[np.isin(labels.numpy()[indices], list(classes))]


class ExpertStepDataset(Dataset):
    """Item ``t``: step ``t`` of every stream (each a one-client :class:`FederatedStepDataset`),
    concatenated along the client's batch::

        {"query": [1, n, 3, S, S], "key": [1, n, 3, S, S], "query_pixels": [1, n, 3, S, S] on
         [0, 1], "client_ids": [1], "step": t}

    with ``n`` the streams' batch sizes summed; ``stats[i]`` normalised stream ``i``.
    """

    def __init__(self, streams: list[FederatedStepDataset], stats: list[Stats]) -> None:
        self.streams, self.stats = streams, stats

    @property
    def steps_per_epoch(self) -> int:
        """One pass over the larger of the streams."""
        return max(stream.steps_per_epoch for stream in self.streams)

    @property
    def client_sizes(self) -> np.ndarray:
        """``[1]``: the client's images, every stream's together."""
        return sum(stream.client_sizes for stream in self.streams)

    def warm_up(self, t: int) -> None:
        for stream in self.streams:
            stream.warm_up(t)

    def __getitem__(self, t: int) -> dict[str, Any]:
        items = [stream[t] for stream in self.streams]
        pixels = [denormalize(i["query"], *s) for i, s in zip(items, self.stats)]
        return {
            "query": torch.cat([i["query"] for i in items], dim=1),
            "key": torch.cat([i["key"] for i in items], dim=1),
            "query_pixels": torch.cat(pixels, dim=1),
            "client_ids": items[0]["client_ids"],
            "step": int(t),
        }


class ExpertDataModule(FederatedDataModule):
    """The target data set as :class:`FederatedDataModule` loads it, for one expert client that
    trains on ``target_fraction`` of its training images plus an auxiliary set.

    ``target_classes`` keeps only those classes of the target data set in every split (train,
    val, test: what the kNN monitor, the probe and the attack see). ``aux`` says where the
    auxiliary images come from: ``name`` / ``root`` / ``download`` / ``synthetic`` of another data
    set (its training split), or ``name: null`` for the target data set's own training images
    outside the validation split and the expert's target share; ``classes`` keeps only those
    classes; ``batch_size`` auxiliary images join the ``client_batch_size`` target images of every
    step. An epoch is one pass over the larger of the two sets. Its settings are checked when
    it is built, as those of the data module.
    """

    partitions_train_split = False  # one client: a share of the split plus auxiliary images

    def __init__(
        self,
        *,
        target_fraction: float = 0.01,
        target_classes: Sequence[int] | None = None,
        aux: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target_fraction = float(target_fraction)
        self.target_classes = None if target_classes is None else [int(c) for c in target_classes]
        self.aux = dict(aux or {})
        self.aux_batch_size = int(self.aux.get("batch_size") or self.plan.client_batch_size)
        self.aux_set: ImageSet | None = None
        self.aux_indices: np.ndarray | None = None
        unknown = sorted(set(self.aux) - set(_AUX_KEYS))
        checks = [
            (
                self.plan.num_clients == 1,
                "the expert is one client: set sfl.num_clients=1 and sfl.clients_per_step=1 "
                f"(got sfl.num_clients={self.plan.num_clients})",
            ),
            (
                0 <= self.target_fraction <= 1,
                f"data.target_fraction={self.target_fraction}; use a value in [0, 1]",
            ),
            (
                not unknown,
                f"unknown data.aux setting(s) {', '.join(unknown)}; known: {', '.join(_AUX_KEYS)}",
            ),
            (self.aux_batch_size >= 1, f"data.aux.batch_size={self.aux_batch_size}; use >= 1"),
        ]
        check_all(checks)

    # -- setup ------------------------------------------------------------------------------
    def make_training_stream(self) -> tuple[list[np.ndarray], ExpertStepDataset]:
        """The expert's share of the target training images (of ``target_classes``) as its
        one part, streamed with the auxiliary images."""
        train = in_classes(self.train_set.labels, self.train_indices, self.target_classes)
        count = round(self.target_fraction * train.shape[0])
        rng = np.random.default_rng([self.settings.seed, 103])
        expert = np.sort(rng.choice(train, count, replace=False)).astype(np.int64)
        exclude = np.union1d(self.val_indices, expert)
        self.aux_set, self.aux_indices = self._auxiliary(exclude)
        return [expert], self._expert_steps(expert)

    def _auxiliary(self, exclude: np.ndarray) -> tuple[ImageSet, np.ndarray]:
        """The auxiliary image set and the indices of its images the expert trains on."""
        name = self.aux.get("name")
        if name is None:
            images = self.train_set
            candidates = np.setdiff1d(np.arange(len(images)), exclude)
        else:
            images = load_image_set(
                name,
                self.aux.get("root", self.settings.root),
                "train",
                bool(self.aux.get("download", False)),
                self.image_size,
                self.aux.get("synthetic"),
            )
            candidates = np.arange(len(images))
        for c in self.aux.get("classes") or []:
            if not 0 <= int(c) < images.num_classes:
                raise ConfigError(
                    f"data.aux.classes: {c} is not a class of {name or self.settings.name}"
                )
        chosen = in_classes(images.labels, candidates, self.aux.get("classes"))
        if chosen.shape[0] == 0:
            raise ConfigError("the auxiliary set is empty: check data.aux.name and .classes")
        return images, chosen.astype(np.int64)

    def _expert_steps(self, expert: np.ndarray) -> ExpertStepDataset:
        """Auxiliary then target stream (the target one only with a non-empty share)."""
        run_seed = self.settings.seed
        aux_name = str(self.aux.get("name") or self.settings.name).lower()
        aux_stats = DATASET_STATS.get(aux_name, (self.mean, self.std))
        aux_seed = int(np.random.SeedSequence([run_seed, _AUX_SEED_STREAM]).generate_state(1)[0])
        target_stats = (self.mean, self.std)
        sources = [
            (self.aux_set, self.aux_indices, self.aux_batch_size, aux_seed, aux_stats),
            (self.train_set, expert, self.plan.client_batch_size, run_seed, target_stats),
        ]
        streams, stats = [], []
        for images, indices, batch_size, seed, (mean, std) in sources:
            if indices.shape[0] == 0:
                continue
            streams.append(
                FederatedStepDataset(
                    images.images,
                    [indices],
                    dataclasses.replace(
                        self._configured_plan, client_batch_size=batch_size, seed=seed
                    ),
                    seed=seed,
                    augmentation=self.make_augmentation(mean, std),
                )
            )
            stats.append((mean, std))
        return ExpertStepDataset(streams, stats)

    # -- what the rest of the run sees --------------------------------------------------------
    def split_indices(self, split: str) -> np.ndarray:
        """As :class:`FederatedDataModule`'s, restricted to ``target_classes``."""
        indices = super().split_indices(split)
        source = self.test_set if split == "test" else self.train_set
        return in_classes(source.labels, indices, self.target_classes)

    def partition_state(self) -> dict[str, np.ndarray]:
        """The target partition and the auxiliary images (a resumed run must see the same)."""
        return {**super().partition_state(), "aux_indices": self.aux_indices.copy()}
