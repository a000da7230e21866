"""The training stream: item ``t`` is the whole federated batch of step ``t``.

Units (docs/design.md, "Units"): a *step* is one server update, a *round* is the steps between
two FedAvg events, a *code epoch* is the original's epoch, one pass over client 0's images, an
*epoch* is ``ceil(train images / server batch)`` steps. Which clients train at step ``t`` and when
FedAvg runs is the :class:`~mocosfl.sfl.plan.FederatedPlan`'s; this file turns it into images.

The batch of step ``t`` is a pure function of ``(seed, t)``:

* pool: :meth:`FederatedPlan.pool_for_step` of ``t`` (one pool per round, step or code epoch);
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
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mocosfl.sfl.ddp import owned_slice
from mocosfl.sfl.plan import FederatedPlan

__all__ = ["FederatedStepDataset", "StepSampler", "step_seed"]

_CHECKPOINT_EVERY = 1024  # pools between cached participation-count snapshots


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

    With ``views`` False (a deployment's server, whose clients make their own views with
    :meth:`client_views`) item ``t`` holds ``client_ids``, ``pool`` and ``step`` only.

    ``plan`` (:class:`~mocosfl.sfl.plan.FederatedPlan`) says which clients train at which step;
    a code epoch not set in it is one pass over client 0's images. ``seed`` drives the streams
    and the augmentation.
    """

    def __init__(
        self,
        images: torch.Tensor,
        parts: list[np.ndarray],
        plan: FederatedPlan,
        *,
        seed: int,
        augmentation: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    ) -> None:
        self.images = images
        self.parts = parts
        self.sizes = np.array([p.shape[0] for p in parts], dtype=np.int64)
        if len(parts) != plan.num_clients:
            raise ValueError(f"{len(parts)} partitions for a plan of {plan.num_clients} clients")
        self.plan = plan.with_client0(self.sizes[0])
        self.seed = int(seed)
        self.augmentation = augmentation
        self.shard = (0, 1)
        self.views = True
        self._reset_cache()

    @property
    def steps_per_epoch(self) -> int:
        """``ceil(images / server batch)``: an epoch (see the module docstring)."""
        return math.ceil(int(self.sizes.sum()) / self.plan.server_batch_size)

    @property
    def client_sizes(self) -> np.ndarray:
        """int64 ``[num_clients]``: each client's images."""
        return self.sizes.copy()

    # -- participation counts ---------------------------------------------------------------
    def _reset_cache(self) -> None:
        self._pool = 0  # self._counts = pools before self._pool in which each client played
        self._counts = np.zeros(self.plan.num_clients, dtype=np.int64)
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
        plan = self.plan
        if plan.clients_per_step >= plan.num_clients:
            return np.full(plan.num_clients, k, dtype=np.int64)
        if k < self._pool:
            base = max(i for i in self._checkpoints if i <= k)
            self._pool, self._counts = base, self._checkpoints[base].copy()
        while self._pool < k:
            self._counts[plan.pool_of(self._pool)] += 1
            self._pool += 1
            if self._pool % _CHECKPOINT_EVERY == 0:
                self._checkpoints[self._pool] = self._counts.copy()
        return self._counts.copy()

    def warm_up(self, t: int) -> None:
        """Bring the participation-count cache up to step ``t`` (cheap if already there)."""
        self.pools_played_before(self.plan.pool_index(t))

    def stream_positions(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Pool of step ``t`` and each pool member's stream position (in images) at step ``t``."""
        t = int(t)
        length = self.plan.steps_per_pool  # every pool plays all of its steps
        k = t // length
        pool = self.plan.pool_of(k)
        played = self.pools_played_before(k)[pool]
        steps_before = played * length + (t - k * length)  # with this pool's earlier steps
        return pool, steps_before * self.plan.client_batch_size

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
        b = self.plan.client_batch_size
        idx = np.stack([self.client_indices(int(c), int(p), b) for c, p in zip(pool, positions)])
        return pool, idx

    # -- items ------------------------------------------------------------------------------
    def __getitem__(self, t: int) -> dict:
        t = int(t)
        pool, idx = self.indices_for_step(t)
        if not self.views:
            return {"client_ids": torch.from_numpy(pool), "pool": torch.from_numpy(pool), "step": t}
        p, b = idx.shape
        x = self.images[torch.from_numpy(idx.reshape(-1))]
        gen = torch.Generator().manual_seed(step_seed(self.seed, t))
        views = self.augmentation(torch.cat([x, x]), gen)
        views = views.view(2, p, b, *views.shape[1:])
        rank, world = self.shard
        mine = owned_slice(p, rank, world)
        return {
            "query": views[0, mine],
            "key": views[1, mine],
            "client_ids": torch.from_numpy(pool[mine]),
            "pool": torch.from_numpy(pool),
            "step": t,
        }

    def client_views(self, t: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client ``c``'s own ``(query, key)`` views [b, 3, S, S] of step ``t``, equal to its rows
        of item ``t`` but made from its images alone: the augmentation's random numbers of the
        whole batch are drawn (cheap) and only the client's rows are used. A deployed client
        makes its views so (``mocosfl.deploy``); the augmentation must be a
        :class:`~mocosfl.data.transforms.MoCoV2Augmentation`."""
        pool, positions = self.stream_positions(t)
        where = np.flatnonzero(pool == c)
        if where.size == 0:
            raise ValueError(f"client {c} is not in the pool of step {t}")
        i, p, b = int(where[0]), len(pool), self.plan.client_batch_size
        x = self.images[torch.from_numpy(self.client_indices(c, int(positions[i]), b))]
        gen = torch.Generator().manual_seed(step_seed(self.seed, t))
        draws = self.augmentation.draws(2 * p * b, gen)
        mine = torch.arange(i * b, (i + 1) * b)
        views = self.augmentation.apply(torch.cat([x, x]), draws[torch.cat([mine, mine + p * b])])
        return views[:b], views[b:]


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
