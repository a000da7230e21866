"""The ``data`` config group as one checked value: :class:`DataSettings`."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from mocosfl.errors import ConfigError, check_all

from .datasets import DATASET_NAMES
from .image_set import DEFAULT_STATS, NAMED_STATS, STATS_CHOICES
from .partition import PARTITION_KINDS
from .transforms import BLUR_KINDS

__all__ = ["DataSettings"]


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The settings of a :class:`~mocosfl.data.module.FederatedDataModule`, one field per key of
    the ``data`` config group (``data.<field>``).

    Built from the config's values as they come (YAML or command-line types, any letter case):
    the fields hold them cast and lower-cased, and ``stats=None`` becomes the data set's own
    (:data:`~mocosfl.data.image_set.DEFAULT_STATS`). Every value is checked here, before any data
    is read; a bad one raises :class:`ConfigError` in one line that names its key.

    ``val_images`` are held out of the training split (at most half of it), then
    ``max_train_images`` (None: all) of the rest are kept, and those are partitioned among the
    clients as ``partition`` says (``classes_per_client`` for shards, ``dirichlet_alpha`` for
    dirichlet); ``seed`` draws all of it. ``blur`` and ``stats`` choose the augmentation's blur
    and the normalisation statistics; ``synthetic`` holds the options of the synthetic data set.
    ``eval_train_images`` (None: all) caps the training images that evaluation reads, the kNN
    bank and the linear probe's training set (:meth:`eval_subset`), not those the clients train
    on.
    """

    name: str
    root: str
    download: bool = True
    image_size: int = 32
    max_train_images: int | None = None
    val_images: int = 5000
    partition: str = "iid"
    classes_per_client: int = 2
    dirichlet_alpha: float = 0.5
    seed: int = 1234
    num_workers: int = 2
    eval_batch_size: int = 256
    eval_train_images: int | None = None
    synthetic: Mapping[str, Any] | None = None
    blur: str = "pil"
    stats: str | None = None

    def __post_init__(self) -> None:
        name = str(self.name).lower()
        stats = DEFAULT_STATS.get(name, "computed") if self.stats is None else self.stats
        max_train, eval_train = self.max_train_images, self.eval_train_images
        values = {
            "name": name,
            "root": str(self.root),
            "download": bool(self.download),
            "image_size": int(self.image_size),
            "max_train_images": None if max_train is None else int(max_train),
            "val_images": int(self.val_images),
            "partition": str(self.partition).lower(),
            "classes_per_client": int(self.classes_per_client),
            "dirichlet_alpha": float(self.dirichlet_alpha),
            "seed": int(self.seed),
            "num_workers": int(self.num_workers),
            "eval_batch_size": int(self.eval_batch_size),
            "eval_train_images": None if eval_train is None else int(eval_train),
            "synthetic": dict(self.synthetic) if self.synthetic else None,
            "blur": str(self.blur).lower(),
            "stats": str(stats).lower(),
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)  # the way round frozen=True
        self._check()

    def _check(self) -> None:
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
            (
                self.eval_train_images is None or self.eval_train_images >= 1,
                f"data.eval_train_images={self.eval_train_images}; use a positive number or null",
            ),
        ]
        check_all(checks)

    # The sizes and the draw of the split side by side: the cost report counts an epoch from
    # split_sizes alone, and must count the images hold_out gives the clients.
    def split_sizes(self, n: int) -> tuple[int, int]:
        """(validation images, client training images) taken from a training split of ``n``
        images: ``val_images`` held out (at most half), the rest capped at ``max_train_images``."""
        n_val = min(self.val_images, n // 2)
        rest = n - n_val
        return n_val, rest if self.max_train_images is None else min(rest, self.max_train_images)

    def hold_out(self, n: int, num_clients: int) -> tuple[np.ndarray, np.ndarray]:
        """``(validation indices, client training indices)``: sorted int64 indices into a
        training split of ``n`` images, as many as :meth:`split_sizes` says, drawn with ``seed``.
        Warns when ``val_images`` is capped; raises :class:`ConfigError` when fewer than
        ``num_clients`` images are left for the clients."""
        n_val, n_train = self.split_sizes(n)
        if n_val < self.val_images:
            warnings.warn(
                f"data.val_images={self.val_images} capped to {n_val} (half of the {n} "
                f"{self.name} training images)",
                stacklevel=3,  # the caller of the data module's setup()
            )
        if n - n_val < num_clients:
            raise ConfigError(
                f"{self.name} has {n} training images; after holding out {n_val} for "
                f"validation, {n - n_val} are left for {num_clients} clients; lower "
                "sfl.num_clients or data.val_images"
            )
        perm = np.random.default_rng([self.seed, 101]).permutation(n).astype(np.int64)
        val, rest = np.sort(perm[:n_val]), perm[n_val:]
        if n_train < rest.shape[0]:
            rest = np.random.default_rng([self.seed, 102]).permutation(rest)[:n_train]
        if rest.shape[0] < num_clients:
            raise ConfigError(
                f"data.max_train_images={self.max_train_images} leaves {rest.shape[0]} "
                f"training images for {num_clients} clients; raise data.max_train_images or "
                "lower sfl.num_clients"
            )
        return val, np.sort(rest)

    def eval_subset(self, train_indices: np.ndarray) -> np.ndarray:
        """The training images evaluation reads: ``eval_train_images`` of ``train_indices``
        (sorted), drawn with ``seed``, or all of them when it is None or not smaller. A fixed
        subset, so that every evaluation of a run (online and from its checkpoint) uses the
        same bank."""
        n = self.eval_train_images
        if n is None or n >= train_indices.shape[0]:
            return train_indices
        return np.sort(np.random.default_rng([self.seed, 103]).choice(train_indices, n, False))
