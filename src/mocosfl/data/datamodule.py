"""FederatedDataModule: one federated batch (all of a step's clients) per training step.

Units (docs/design.md, "Units"): a *step* is one server update, a *round* is the steps between
two FedAvg events (``sync_every``), a *code epoch* is the original's epoch, one pass over client
0's images (:func:`steps_per_pass`), an *epoch* is ``ceil(train images / server batch)`` steps.

The batch of step ``t`` is a pure function of ``(seed, t)``:

* pool: its index ``k`` is :meth:`PoolSchedule.pool_index` of ``t`` (the round ``t // sync_every``
  with ``pool="round"``, the step ``t`` with ``pool="step"`` or ``sync_every=0``, the code epoch
  with ``pool="epoch"``), the pool
  ``np.random.default_rng([seed, k, 17]).choice(num_clients, P, replace=False)``, sorted;
* client ``c`` reads its partition as an endless stream of shuffled passes, pass ``j`` being the
  permutation ``default_rng([seed, c, j, 29]).permutation(n_c)``; at step ``t`` it reads ``b``
  consecutive stream positions from ``b * (steps before t in which c was in the pool)``; a client
  with fewer than ``b`` images wraps around into its next passes;
* augmentation: a ``torch.Generator`` seeded with
  ``SeedSequence([seed, t]).generate_state(1)[0]`` augments ``cat([x, x])`` in one call: the first
  half is the query view, the second the key view.

All images live in one uint8 tensor per split; partitions are int64 index arrays into it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError
from .datasets import (
    DATASET_NAMES,
    DEFAULT_STATS,
    NAMED_STATS,
    STATS_CHOICES,
    ImageSet,
    Stats,
    load_image_set,
    pixel_stats,
)
from .partition import PARTITION_KINDS, label_counts, make_partition
from .transforms import BLUR_KINDS, MoCoV2Augmentation, normalize

__all__ = [
    "EvalImages",
    "FederatedDataModule",
    "FederatedStepDataset",
    "PoolSchedule",
    "StepSampler",
    "eval_loader",
    "pool_for_round",
    "step_seed",
    "steps_per_pass",
]

POOL_MODES = ("round", "step", "epoch")
_CHECKPOINT_EVERY = 1024  # pools between cached participation-count snapshots


def pool_for_round(seed: int, r: int, num_clients: int, clients_per_step: int) -> np.ndarray:
    """The sorted client ids of pool ``r`` (a round, a step or a code epoch: see
    :meth:`PoolSchedule.pool_index`)."""
    if clients_per_step >= num_clients:
        return np.arange(num_clients, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(r), 17])
    return np.sort(rng.choice(num_clients, clients_per_step, replace=False)).astype(np.int64)


def steps_per_pass(client_images: int, client_batch_size: int) -> int:
    """Steps of one pass over ``client_images`` images in batches of ``client_batch_size``, the
    last one short: ``len()`` of a DataLoader without drop_last. Of client 0's images this is the
    original's epoch, the length of its client 0's loader (docs/differences.md, "client pools")."""
    return -(-int(client_images) // int(client_batch_size))


@dataclass(frozen=True)
class PoolSchedule:
    """Which steps share a pool and after which FedAvg runs, as functions of the step alone.

    ``mode="round"``: a pool per round of ``sync_every`` steps (per step with ``sync_every=0``).
    ``mode="step"``: a new pool every step, FedAvg every ``sync_every`` steps.
    ``mode="epoch"``: the original's loop (docs/differences.md, "client pools"): a pool per code
    epoch of ``epoch_steps`` steps, FedAvg after every ``sync_every``-th step of the epoch and
    after its last one, so that no round spans two pools; 125 steps at ``sync_every=12`` are 10
    rounds of 12 and one of 5, as the original's ``avg_freq=10`` (``125 // 10 = 12``) gives.
    ``sync_every=0``: no FedAvg.
    """

    mode: str
    sync_every: int
    epoch_steps: int = 1

    @property
    def steps_per_pool(self) -> int:
        if self.mode == "epoch":
            return self.epoch_steps
        if self.mode == "round" and self.sync_every > 0:
            return self.sync_every
        return 1

    def pool_index(self, t: int) -> int:
        """Index of the pool of step ``t``: its round, step or code epoch."""
        return int(t) // self.steps_per_pool

    def ends_round(self, t: int) -> bool:
        """Whether FedAvg follows step ``t``."""
        if self.sync_every == 0:
            return False
        if self.mode == "epoch":
            place = int(t) % self.epoch_steps
            return (place + 1) % self.sync_every == 0 or place == self.epoch_steps - 1
        return (int(t) + 1) % self.sync_every == 0


def step_seed(seed: int, t: int) -> int:
    """Seed of the augmentation generator of step ``t``."""
    return int(np.random.SeedSequence([int(seed), int(t)]).generate_state(1)[0])


class FederatedStepDataset(Dataset):
    """Map-style data set whose item ``t`` is the whole federated batch of step ``t``.

    ``{"query": float [P, b, 3, S, S], "key": float [P, b, 3, S, S], "client_ids": int64 [P],
    "pool": int64 [P], "step": t}``. Holds references to the shared image tensor and the
    per-client index arrays only; the caches below are per process (each DataLoader worker keeps
    its own).

    With ``shard = (rank, world)`` (several processes, DDP) item ``t`` holds the rank's
    contiguous ``P / world`` clients of the pool: ``query``, ``key`` and ``client_ids`` are
    sliced, ``pool`` stays whole. The whole batch is drawn and augmented first, so no image or
    augmentation depends on the rank.

    ``schedule`` (:class:`PoolSchedule`) says which steps share a pool; with ``pool="epoch"`` a
    code epoch is ``code_epoch_steps`` steps, by default one pass over client 0's images.
    """

    def __init__(
        self,
        images: torch.Tensor,
        parts: list[np.ndarray],
        *,
        clients_per_step: int,
        client_batch_size: int,
        sync_every: int,
        pool: str,
        seed: int,
        augmentation: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
        code_epoch_steps: int | None = None,
    ) -> None:
        self.images = images
        self.parts = parts
        self.sizes = np.array([p.shape[0] for p in parts], dtype=np.int64)
        self.num_clients = len(parts)
        self.clients_per_step = int(clients_per_step)
        self.client_batch_size = int(client_batch_size)
        epoch_steps = code_epoch_steps
        if epoch_steps is None:
            epoch_steps = steps_per_pass(self.sizes[0], self.client_batch_size)
        self.schedule = PoolSchedule(str(pool), int(sync_every), int(epoch_steps))
        self.seed = int(seed)
        self.augmentation = augmentation
        self.shard = (0, 1)
        self._reset_cache()

    # -- pools and participation counts ----------------------------------------------------
    def pool_of(self, k: int) -> np.ndarray:
        """The sorted client ids of pool ``k`` (:meth:`PoolSchedule.pool_index`)."""
        return pool_for_round(self.seed, k, self.num_clients, self.clients_per_step)

    def pool_for_step(self, t: int) -> np.ndarray:
        return self.pool_of(self.schedule.pool_index(t))

    def _reset_cache(self) -> None:
        self._pool = 0  # self._counts = pools before self._pool in which each client played
        self._counts = np.zeros(self.num_clients, dtype=np.int64)
        self._checkpoints: dict[int, np.ndarray] = {0: self._counts.copy()}
        self._pass_cache: dict[int, tuple[int, np.ndarray]] = {}

    def pools_played_before(self, k: int) -> np.ndarray:
        """``[num_clients]`` number of pools before pool ``k`` in which each client played.

        Cached: moving forward extends the running count; moving backward restarts from the last
        snapshot (kept every 1024 pools) at or before ``k``.
        """
        k = int(k)
        if k < 0:
            raise ValueError(f"negative pool index {k}")
        if self.clients_per_step >= self.num_clients:
            return np.full(self.num_clients, k, dtype=np.int64)
        if k < self._pool:
            base = max(i for i in self._checkpoints if i <= k)
            self._pool, self._counts = base, self._checkpoints[base].copy()
        while self._pool < k:
            self._counts[self.pool_of(self._pool)] += 1
            self._pool += 1
            if self._pool % _CHECKPOINT_EVERY == 0:
                self._checkpoints[self._pool] = self._counts.copy()
        return self._counts.copy()

    def warm_up(self, t: int) -> None:
        """Bring the participation-count cache up to step ``t`` (cheap if already there)."""
        self.pools_played_before(self.schedule.pool_index(t))

    def stream_positions(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Pool of step ``t`` and each pool member's stream position (in images) at step ``t``."""
        t = int(t)
        length = self.schedule.steps_per_pool  # every pool plays all of its steps
        k = t // length
        pool = self.pool_of(k)
        played = self.pools_played_before(k)[pool]
        steps_before = played * length + (t - k * length)  # with this pool's earlier steps
        return pool, steps_before * self.client_batch_size

    def _pass_permutation(self, c: int, j: int) -> np.ndarray:
        cached = self._pass_cache.get(c)
        if cached is not None and cached[0] == j:
            return cached[1]
        perm = np.random.default_rng([self.seed, int(c), int(j), 29]).permutation(self.sizes[c])
        self._pass_cache[c] = (j, perm)
        return perm

    def client_indices(self, c: int, position: int, count: int) -> np.ndarray:
        """Image indices at stream positions ``position .. position + count - 1`` of client c."""
        n = int(self.sizes[c])
        local = np.empty(count, dtype=np.int64)
        if n == 1:
            local[:] = 0
        else:
            filled, pos = 0, int(position)
            while filled < count:
                j, o = divmod(pos, n)
                take = min(n - o, count - filled)
                local[filled : filled + take] = self._pass_permutation(c, j)[o : o + take]
                filled += take
                pos += take
        return self.parts[c][local]

    def indices_for_step(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(client_ids [P], image indices [P, b])`` of step ``t``."""
        pool, positions = self.stream_positions(t)
        b = self.client_batch_size
        idx = np.stack([self.client_indices(int(c), int(p), b) for c, p in zip(pool, positions)])
        return pool, idx

    # -- items ------------------------------------------------------------------------------
    def __getitem__(self, t: int) -> dict:
        t = int(t)
        pool, idx = self.indices_for_step(t)
        p, b = idx.shape
        x = self.images[torch.from_numpy(idx.reshape(-1))]
        gen = torch.Generator().manual_seed(step_seed(self.seed, t))
        views = self.augmentation(torch.cat([x, x]), gen)
        views = views.view(2, p, b, *views.shape[1:])
        rank, world = self.shard
        mine = slice(rank * p // world, (rank + 1) * p // world)
        return {
            "query": views[0, mine],
            "key": views[1, mine],
            "client_ids": torch.from_numpy(pool[mine]),
            "pool": torch.from_numpy(pool),
            "step": t,
        }


class StepSampler(Sampler[int]):
    """Yields the steps from ``start_step()`` to the end of that step's epoch.

    A fresh epoch starts at a multiple of ``steps_per_epoch`` and yields ``steps_per_epoch`` steps;
    resuming mid-epoch yields the remaining steps of that epoch. ``__len__`` is the full epoch.
    ``prepare(start)``, if given, runs in the main process when iteration starts, before the
    DataLoader forks its workers (the data module uses it to bring the participation-count cache
    up to ``start``, so that fresh workers do not recount from step 0 every epoch).
    """

    def __init__(
        self,
        steps_per_epoch: int,
        start_step: Callable[[], int] | None = None,
        prepare: Callable[[int], object] | None = None,
    ) -> None:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.steps_per_epoch = int(steps_per_epoch)
        self.start_step = start_step if start_step is not None else (lambda: 0)
        self.prepare = prepare

    def __iter__(self) -> Iterator[int]:
        start = int(self.start_step())
        if start < 0:
            raise ValueError(f"start step must be >= 0, got {start}")
        if self.prepare is not None:
            self.prepare(start)
        end = (start // self.steps_per_epoch + 1) * self.steps_per_epoch
        return iter(range(start, end))

    def __len__(self) -> int:
        return self.steps_per_epoch


class EvalImages(Dataset):
    """The images of one split, normalised and not augmented, in a fixed order.

    ``len()`` is the number of images and item ``i`` one ``(image [3, S, S], label)`` pair, as for
    any map-style data set; a DataLoader built with :func:`eval_loader` fetches whole batches in
    one vectorised ``__getitems__`` call instead of image by image.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray, mean, std
    ) -> None:
        self.images, self.labels = images, labels
        self.indices = np.asarray(indices, dtype=np.int64)
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        return normalize(self.images[j : j + 1], self.mean, self.std)[0], self.labels[j]

    def __getitems__(self, items: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(self.indices[np.asarray(items, dtype=np.int64)])
        return normalize(self.images[idx], self.mean, self.std), self.labels[idx]


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn for :class:`EvalImages`: ``__getitems__`` already returns a whole batch."""
    return batch


def eval_loader(dataset: EvalImages, batch_size: int) -> DataLoader:
    """Fixed-order batches ``(float images [B, 3, S, S], int64 labels [B])`` of ``dataset``.

    Runs in the main process: normalising a stored batch is cheaper than a worker round trip.
    """
    return DataLoader(
        dataset, batch_size=int(batch_size), shuffle=False, num_workers=0, collate_fn=_as_batch
    )


class FederatedDataModule(L.LightningDataModule):
    """Loads a data set, holds out a validation split, partitions the rest among clients and
    serves one federated batch per training step (see the module docstring).

    ``setup()`` (idempotent) checks every setting, then: loads the train and test splits
    (:func:`load_image_set`); holds out ``min(val_images, half the training split)`` seeded random
    training images as the validation split (a warning says when it caps); keeps a seeded random
    ``max_train_images`` of the rest if set; and partitions what remains among ``num_clients``
    (:func:`make_partition` with ``partition``, ``classes_per_client``, ``dirichlet_alpha`` and
    ``seed``). Every user-fixable problem raises :class:`ConfigError` there, before training.
    ``pool`` and ``code_epoch_steps`` decide which steps share a pool (:attr:`pool_schedule`).

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
        name: str,
        root: str,
        download: bool = True,
        image_size: int = 32,
        max_train_images: int | None = None,
        val_images: int = 5000,
        partition: str = "iid",
        classes_per_client: int = 2,
        dirichlet_alpha: float = 0.5,
        num_clients: int = 5,
        clients_per_step: int = 5,
        client_batch_size: int = 20,
        sync_every: int = 50,
        pool: str = "round",
        code_epoch_steps: int | None = None,
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
        self.num_clients = int(num_clients)
        self.clients_per_step = int(clients_per_step)
        self.client_batch_size = int(client_batch_size)
        self.sync_every = int(sync_every)
        self.pool = str(pool).lower()
        self._code_epoch_steps = None if code_epoch_steps is None else int(code_epoch_steps)
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
        if self.pool not in POOL_MODES:
            raise ConfigError(f"unknown sfl.pool={self.pool!r}; use {', '.join(POOL_MODES)}")
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
            (self.num_clients >= 1, f"sfl.num_clients={self.num_clients}; use at least 1"),
            (
                self.clients_per_step >= 1,
                f"sfl.clients_per_step={self.clients_per_step}; use at least 1",
            ),
            (
                self.clients_per_step <= self.num_clients,
                f"sfl.clients_per_step={self.clients_per_step} is larger than "
                f"sfl.num_clients={self.num_clients}; a pool draws clients without "
                "replacement, so lower sfl.clients_per_step or raise sfl.num_clients",
            ),
            (
                self.client_batch_size >= 1,
                f"sfl.client_batch_size={self.client_batch_size}; use at least 1",
            ),
            (
                self.sync_every >= 0,
                f"sfl.sync_every={self.sync_every}; use 0 (no FedAvg) or a positive "
                "number of steps",
            ),
            (
                self._code_epoch_steps is None or self._code_epoch_steps >= 1,
                f"data.code_epoch_steps={self._code_epoch_steps}; use at least 1, or null for "
                "one pass over client 0's images",
            ),
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
        if n - n_val < self.num_clients:
            raise ConfigError(
                f"{self.name} has {n} training images; after holding out {n_val} for "
                f"validation, {n - n_val} are left for {self.num_clients} clients; lower "
                "sfl.num_clients or data.val_images"
            )
        perm = np.random.default_rng([self.seed, 101]).permutation(n).astype(np.int64)
        val_idx, rest = np.sort(perm[:n_val]), perm[n_val:]
        if n_train < rest.shape[0]:
            rest = np.random.default_rng([self.seed, 102]).permutation(rest)
            rest = rest[:n_train]
        train_idx = np.sort(rest)
        if train_idx.shape[0] < self.num_clients:
            raise ConfigError(
                f"data.max_train_images={self.max_train_images} leaves {train_idx.shape[0]} "
                f"training images for {self.num_clients} clients; raise data.max_train_images or "
                "lower sfl.num_clients"
            )
        labels = train.labels.numpy()
        local = make_partition(
            self.partition,
            labels[train_idx],
            self.num_clients,
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
        if self.sync_every == 0:
            redrawn = "every step" if self.pool != "epoch" else "every code epoch"
            warnings.warn(
                f"sfl.sync_every=0: the pool is redrawn {redrawn} and FedAvg never runs",
                stacklevel=2,
            )
        if self.mean is None:  # data.stats=computed, and no checkpoint's values (use_saved_stats)
            self.mean, self.std = pixel_stats(train.images)
        self.train_set, self.test_set = train, test
        self.train_indices, self.val_indices = train_idx, val_idx
        self.client_parts = parts
        self._step_dataset = self._make_step_dataset()

    def _require_setup(self) -> None:
        if self.client_parts is None:
            raise RuntimeError("call FederatedDataModule.setup() first")

    def _make_step_dataset(self) -> FederatedStepDataset:
        return FederatedStepDataset(
            self.train_set.images,
            self.client_parts,
            clients_per_step=self.clients_per_step,
            client_batch_size=self.client_batch_size,
            sync_every=self.sync_every,
            pool=self.pool,
            code_epoch_steps=self.code_epoch_steps,
            seed=self.seed,
            augmentation=self.make_augmentation(self.mean, self.std),
        )

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
    def server_batch_size(self) -> int:
        return self.clients_per_step * self.client_batch_size

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_train_images / self.server_batch_size)

    @property
    def code_epoch_steps(self) -> int:
        """The original's epoch, the length of its client 0's loader: steps of one pass over
        client 0's images, or ``code_epoch_steps`` when given (docs/differences.md, "client
        pools"). With clients of unequal sizes (non-IID) the others read more or less than one
        pass of theirs in it, as in the original; their streams run on across code epochs."""
        if self._code_epoch_steps is not None:
            return self._code_epoch_steps
        self._require_setup()
        return steps_per_pass(self.client_parts[0].shape[0], self.client_batch_size)

    @property
    def pool_schedule(self) -> PoolSchedule:
        """Which steps share a pool and after which FedAvg runs (the FedAvg callback reads it)."""
        return PoolSchedule(self.pool, self.sync_every, self.code_epoch_steps)

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

    # -- pools --------------------------------------------------------------------------------
    def pool_for_step(self, t: int) -> np.ndarray:
        """Sorted client ids of step ``t``."""
        k = self.pool_schedule.pool_index(t)
        return pool_for_round(self.seed, k, self.num_clients, self.clients_per_step)

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
