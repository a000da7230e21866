"""FederatedPlan: which clients train at which step, and after which steps FedAvg runs.

The one owner of the federated schedule (docs/design.md, "Units"): the data module draws each
step's pool from it, the FedAvg callback ends rounds where it says, the LightningModule takes the
original's epoch from it for the legacy schedules, and the cost accounting counts rounds with it.
Built from the ``sfl`` config group (:meth:`FederatedPlan.from_config`); everything is a function
of the step alone, so a resumed run follows the same plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mocosfl.errors import check_all

__all__ = ["POOL_MODES", "FederatedPlan", "draw_pool", "steps_per_pass"]

POOL_MODES = ("round", "step", "epoch")


def draw_pool(seed: int, k: int, num_clients: int, clients_per_step: int) -> np.ndarray:
    """int64 ``[clients_per_step]``: the sorted client ids of pool ``k``, drawn without
    replacement by ``np.random.default_rng([seed, k, 17])``; every client when the pool is all of
    them."""
    if clients_per_step >= num_clients:
        return np.arange(num_clients, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(k), 17])
    return np.sort(rng.choice(num_clients, clients_per_step, replace=False)).astype(np.int64)


def steps_per_pass(client_images: int, client_batch_size: int) -> int:
    """Steps of one pass over ``client_images`` images in batches of ``client_batch_size``, the
    last one short: ``len()`` of a DataLoader without drop_last. Of client 0's images this is the
    original's epoch, the length of its client 0's loader (docs/differences.md, "client pools")."""
    return -(-int(client_images) // int(client_batch_size))


@dataclass(frozen=True)
class FederatedPlan:
    """The federated schedule of a run, validated when built (``sfl.*`` settings).

    ``pool="round"``: one pool of ``clients_per_step`` clients per round of ``sync_every`` steps
    (per step with ``sync_every=0``), FedAvg after every round. ``pool="step"``: a new pool every
    step, FedAvg every ``sync_every`` steps. ``pool="epoch"``: the original's loop
    (docs/differences.md, "client pools"): one pool per code epoch of ``code_epoch_steps`` steps,
    FedAvg after every ``sync_every``-th step of the code epoch and after its last one, so that no
    round spans two pools (125 steps at ``sync_every=12`` are 10 rounds of 12 and one of 5, as the
    original's ``avg_freq=10`` gives). ``sync_every=0``: no FedAvg.

    ``code_epoch_steps=None`` means one pass over client 0's images, known once the data is
    partitioned: :meth:`with_client0` fills it in (the data module does, in ``setup()``).
    """

    num_clients: int = 5
    clients_per_step: int = 5
    client_batch_size: int = 20
    sync_every: int = 50
    pool: str = "round"
    code_epoch_steps: int | None = None
    seed: int = 1234

    def __post_init__(self) -> None:
        checks = [
            (
                self.pool in POOL_MODES,
                f"unknown sfl.pool={self.pool!r}; use {', '.join(POOL_MODES)}",
            ),
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
                f"sfl.sync_every={self.sync_every}; use 0 (no FedAvg) or a positive number of "
                "steps",
            ),
            (
                self.code_epoch_steps is None or self.code_epoch_steps >= 1,
                f"sfl.code_epoch_steps={self.code_epoch_steps}; use at least 1, or null for one "
                "pass over client 0's images",
            ),
        ]
        check_all(checks)

    @classmethod
    def from_config(cls, sfl: Mapping[str, Any], seed: int) -> FederatedPlan:
        """The plan of an ``sfl`` config (its other settings are the method's), drawing pools
        with ``seed``."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "seed"]
        values = {name: sfl[name] for name in names if sfl.get(name) is not None}
        if "pool" in values:
            values["pool"] = str(values["pool"]).lower()
        return cls(**{k: v if k == "pool" else int(v) for k, v in values.items()}, seed=int(seed))

    def with_client0(self, client0_images: int) -> FederatedPlan:
        """This plan with ``code_epoch_steps`` known: one pass over client 0's images unless
        set."""
        if self.code_epoch_steps is not None:
            return self
        steps = steps_per_pass(client0_images, self.client_batch_size)
        return dataclasses.replace(self, code_epoch_steps=steps)

    # -- pools and rounds ---------------------------------------------------------------------
    @property
    def server_batch_size(self) -> int:
        """Images of one step: ``clients_per_step * client_batch_size``."""
        return self.clients_per_step * self.client_batch_size

    @property
    def steps_per_pool(self) -> int:
        if self.pool == "epoch":
            return self._code_epoch()
        if self.pool == "round" and self.sync_every > 0:
            return self.sync_every
        return 1

    def pool_index(self, t: int) -> int:
        """Index of the pool of step ``t``: its round, step or code epoch."""
        return int(t) // self.steps_per_pool

    def pool_of(self, k: int) -> np.ndarray:
        """int64 ``[clients_per_step]``: the sorted client ids of pool ``k``."""
        return draw_pool(self.seed, k, self.num_clients, self.clients_per_step)

    def pool_for_step(self, t: int) -> np.ndarray:
        """int64 ``[clients_per_step]``: the sorted client ids that train at step ``t``."""
        return self.pool_of(self.pool_index(t))

    def ends_round(self, t: int) -> bool:
        """Whether FedAvg follows step ``t``."""
        if self.sync_every == 0:
            return False
        if self.pool == "epoch":
            epoch_steps = self._code_epoch()
            place = int(t) % epoch_steps
            return (place + 1) % self.sync_every == 0 or place == epoch_steps - 1
        return (int(t) + 1) % self.sync_every == 0

    def _code_epoch(self) -> int:
        if self.code_epoch_steps is None:
            raise RuntimeError("code_epoch_steps is not known yet: use plan.with_client0()")
        return self.code_epoch_steps

    # -- counts for the cost accounting -------------------------------------------------------
    @property
    def _epoch_rounds(self) -> bool:
        """Whether code epochs end rounds too (a short one when not a multiple of sync_every);
        without a known code epoch, rounds are counted as ``sync_every`` steps each."""
        return self.pool == "epoch" and self.code_epoch_steps is not None

    def images_per_client(self, steps: float) -> float:
        """Images an average client encodes in ``steps`` steps."""
        return steps * self.server_batch_size / self.num_clients

    def syncs_per_epoch(self, steps_per_epoch: int) -> float:
        """FedAvg rounds an epoch holds on average (rounds need not align with epochs)."""
        if not self.sync_every:
            return 0.0
        if self._epoch_rounds:
            per_code_epoch = math.ceil(self.code_epoch_steps / self.sync_every)
            return steps_per_epoch * per_code_epoch / self.code_epoch_steps
        return steps_per_epoch / self.sync_every

    def syncs_in_run(self, total_steps: int) -> int:
        """FedAvg rounds of a whole run: every round, the last one cut short by the end of
        training included (FedAvg also runs at the end)."""
        if not self.sync_every:
            return 0
        if self._epoch_rounds:
            epochs, rest = divmod(total_steps, self.code_epoch_steps)
            per_code_epoch = math.ceil(self.code_epoch_steps / self.sync_every)
            return epochs * per_code_epoch + math.ceil(rest / self.sync_every)
        return math.ceil(total_steps / self.sync_every)

    def clients_per_sync(self) -> float:
        """Clients that trained since the last FedAvg: the round's pool, or with a new pool every
        step the expected number of distinct clients drawn in ``sync_every`` steps."""
        if self.pool != "step":  # round or epoch: one pool for the whole round
            return float(self.clients_per_step)
        missed = (1 - self.clients_per_step / self.num_clients) ** self.sync_every
        return self.num_clients * (1 - missed)
