"""The client side of split learning: every client's model, momentum copy and optimizer.

Two engines hold the same clients and give the same numbers (``sfl.client_engine``):
:class:`~mocosfl.sfl.loop_clients.LoopClientBank` keeps one module and one optimizer per client
and runs a step's pool one client after the other;
:class:`~mocosfl.sfl.vmap_clients.VmapClientBank` stacks every client's tensors and runs the pool
in one vectorised call. Both write the same checkpoint entries
(``online.<c>.<name>``, ``momentum.<c>.<name>`` and one optimizer state dict per client), so a
checkpoint of one loads in the other.
"""

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

OptimizerFactory = Callable[..., torch.optim.Optimizer]
Rows = dict[str, torch.Tensor]  # state name -> [n, *shape], row i for the i-th client asked for
MODEL_KINDS = ("online", "momentum")


class ClientBank(nn.Module, ABC):
    """All clients of a MocoSFL run, simulated in one process.

    Every client starts as a copy of one client model (so FedAvg averages networks of one
    origin) and owns a momentum copy and an optimizer. Only the clients of a step's pool do any
    work; the others are not touched until the next FedAvg loads the average into them.

    Buffers (persistent, part of the checkpoint):
        weights: [N] FedAvg weights (client data sizes, or ones for uniform averaging).
        participated: [N] bool, clients that trained since the last FedAvg.
        steps: [N] long, optimizer steps each client took (drives the legacy client schedule).
    """

    def __init__(
        self,
        client: nn.Module,
        num_clients: int,
        optimizer: OptimizerFactory,
        ema_decay: float = 0.99,
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.num_clients = num_clients
        self.ema_decay = ema_decay
        self.param_names = [name for name, _ in client.named_parameters()]
        probe = optimizer(params=client.parameters())
        self.base_lr = float(probe.defaults["lr"])
        w = (
            torch.ones(num_clients)
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float)
        )
        if w.shape != (num_clients,):
            raise ValueError(f"expected {num_clients} FedAvg weights, got {tuple(w.shape)}")
        self.register_buffer("weights", w.float())
        self.register_buffer("participated", torch.zeros(num_clients, dtype=torch.bool))
        self.register_buffer("steps", torch.zeros(num_clients, dtype=torch.long))
        self._add_clients(client, optimizer, probe)

    @abstractmethod
    def _add_clients(
        self, client: nn.Module, optimizer: OptimizerFactory, probe: torch.optim.Optimizer
    ) -> None:
        """Hold ``num_clients`` copies of ``client`` with their momentum copies and optimizer
        state; ``probe`` is ``optimizer`` built on ``client`` (its type and settings)."""

    # -- the engine: one step -----------------------------------------------------------------
    @abstractmethod
    def encode(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        """Online latents, with the autograd graph kept for the pool's backward and :meth:`step`.

        images: [P, b, C, H, W], row i belonging to client ``ids[i]``. Returns [P * b, *latent].
        """

    @abstractmethod
    def encode_momentum(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        """Key latents from each client's momentum copy. images: [P, b, C, H, W] -> [P * b, ...]."""

    @abstractmethod
    def update_momentum(self, ids: Sequence[int]) -> None:
        """EMA update of the pool's momentum copies."""

    @abstractmethod
    def step(self, ids: Sequence[int], lr: Callable[[int], float]) -> None:
        """Step the optimizer of every client in the pool; ``lr(c)`` gives client c's rate.
        Implementations end with :meth:`_count_steps`."""

    def encode_pool(
        self, batch: dict[str, Any], two_way: bool
    ) -> tuple[list[int], dict[str, torch.Tensor]]:
        """The client half of a MocoSFL step on ``batch`` (``client_ids`` [P], ``query`` and
        ``key`` [P, b, C, H, W]), in the original's order: the momentum copies update, then
        encode the keys. Returns the pool's ids and ``{"query", "key"}`` latents [P * b, ...]
        (with ``two_way`` also ``query_swapped`` and ``key_swapped``, the views exchanged);
        the online ones keep their graph for the backward and :meth:`step`."""
        ids = batch["client_ids"].tolist()
        query, key = batch["query"], batch["key"]
        self.update_momentum(ids)
        latents = {"key": self.encode_momentum(ids, key), "query": self.encode(ids, query)}
        if two_way:
            latents["key_swapped"] = self.encode_momentum(ids, query)
            latents["query_swapped"] = self.encode(ids, key)
        return ids, latents

    # -- the engine: state by client -----------------------------------------------------------
    @abstractmethod
    def states(self, kind: str, ids: Sequence[int]) -> Rows:
        """The state of models ``kind`` (online | momentum) of ``ids``, one row per client."""

    @abstractmethod
    def set_states(self, kind: str, ids: Sequence[int], rows: Rows) -> None:
        """Load ``rows`` ([len(ids), ...], or [1, ...] for all of them) into those models."""

    @abstractmethod
    def optimizer_rows(self, ids: Sequence[int]) -> Rows:
        """SGD state of ``ids``: ``sgd.<param>`` momentum buffers (zeros before a client's first
        step) and ``sgd_started`` [n] bool."""

    @abstractmethod
    def set_optimizer_rows(self, ids: Sequence[int], rows: Rows) -> None: ...

    @abstractmethod
    def template(self) -> nn.Module:
        """A client model whose structure the engine runs (not a copy; do not change it)."""

    @abstractmethod
    def optimizer_state(self) -> list[dict]:
        """One ``torch.optim`` state dict per client (the checkpoint format of both engines)."""

    @abstractmethod
    def load_optimizer_state(self, states: list[dict]) -> None: ...

    def _check_optimizer_states(self, states: list[dict]) -> None:
        if len(states) != self.num_clients:
            raise ValueError(
                f"checkpoint has {len(states)} client optimizers, this run {self.num_clients}"
            )

    @torch.no_grad()
    def _count_steps(self, ids: Sequence[int]) -> None:
        index = torch.as_tensor(list(ids), device=self.steps.device)
        self.steps[index] += 1
        self.participated[index] = True

    def run_stats(self) -> dict[str, float]:
        """Running totals of a deployment's traffic, time and missing clients, by metric name
        (none here: simulated clients always answer)."""
        return {}

    # -- several processes (DDP) ------------------------------------------------------------
    def client_rows(self, ids: Sequence[int]) -> Rows:
        """Everything a client carries from step to step: both models, SGD state, step count."""
        rows = {f"{kind}.{k}": v for kind in MODEL_KINDS for k, v in self.states(kind, ids).items()}
        rows.update(self.optimizer_rows(ids))
        rows["steps"] = self.steps[list(ids)]
        return rows

    @torch.no_grad()
    def set_client_rows(self, ids: Sequence[int], rows: Rows) -> None:
        for kind in MODEL_KINDS:
            prefix = f"{kind}."
            states = {k[len(prefix) :]: v for k, v in rows.items() if k.startswith(prefix)}
            self.set_states(kind, ids, states)
        self.set_optimizer_rows(ids, {k: v for k, v in rows.items() if k.startswith("sgd")})
        self.steps[list(ids)] = rows["steps"]

    @torch.no_grad()
    def share_pool(self, pool: Sequence[int], owned: slice) -> None:
        """After a step on several processes: every process gets the state of the step's pool
        from the process that trained each client (``pool[owned]`` here), so all of them keep
        the whole, identical bank (:func:`share_rows`: two all-reduces, floating and integer)."""
        self.set_client_rows(pool, share_rows(self.client_rows(pool), owned))
        self.participated[list(pool)] = True

    # -- FedAvg -----------------------------------------------------------------------------
    def pool_since_sync(self) -> list[int]:
        """Clients that trained since the last FedAvg (the round's pool)."""
        return self.participated.nonzero().flatten().tolist()

    def pool_states(self, kind: str, ids: Sequence[int]) -> tuple[list[int], Rows]:
        """``(ids, rows)``: the state of models ``kind`` of the clients of ``ids`` that give it,
        one row each (all of them here; a remote client may not answer)."""
        return list(ids), self.states(kind, ids)

    @torch.no_grad()
    def average_rows(self, ids: Sequence[int], rows: Rows) -> dict[str, torch.Tensor]:
        """Weighted average of the state ``rows`` of clients ``ids`` (floating tensors only;
        integer buffers such as BatchNorm's batch counter are taken from the first client)."""
        w = self.weights[list(ids)]
        w = w / w.sum()
        return {
            key: torch.tensordot(w.to(row.dtype), row, dims=1)
            if row.is_floating_point()
            else row[0].clone()
            for key, row in rows.items()
        }

    def average(self, kind: str, ids: Sequence[int]) -> dict[str, torch.Tensor]:
        """Weighted average of the state of models ``kind`` over ``ids``."""
        return self.average_rows(ids, self.states(kind, ids))

    @torch.no_grad()
    def divergence_rows(self, rows: Rows, average: dict[str, torch.Tensor]) -> float:
        """Mean L2 distance of online models ``rows`` to their average (the paper's Eq. 4)."""
        squared = sum(
            (rows[name] - average[name]).pow(2).flatten(1).sum(1) for name in self.param_names
        )
        return float(squared.sqrt().mean())

    def divergence(self, ids: Sequence[int], average: dict[str, torch.Tensor]) -> float:
        """Mean L2 distance of the online models of ``ids`` to ``average``."""
        return self.divergence_rows(self.states("online", ids), average)

    @torch.no_grad()
    def fedavg(self, sync_momentum: bool = True) -> dict[str, float] | None:
        """Average the round's pool and load the result into every client.

        With ``sync_momentum`` the momentum copies are averaged the same way (MonAcoSFL's fix);
        without it they stay as they are (the original). Optimizer state stays per client.
        Each pool client's state is read once. Returns ``{"divergence": ..., "pool_size": ...}``,
        or None if nobody trained (or, remote, nobody answered).
        """
        pool = self.pool_since_sync()
        ids, rows = self.pool_states("online", pool) if pool else ([], {})
        self.participated.zero_()
        if not ids:
            return None
        avg = self.average_rows(ids, rows)
        stats = {"divergence": self.divergence_rows(rows, avg), "pool_size": float(len(ids))}
        momentum = self.average_rows(*self.pool_states("momentum", ids)) if sync_momentum else None
        self.load_average(avg, momentum)
        return stats

    @torch.no_grad()
    def load_average(
        self, online: dict[str, torch.Tensor], momentum: dict[str, torch.Tensor] | None
    ) -> None:
        """Give every client the online model state ``online`` and, unless None, the momentum
        copy state ``momentum`` (remote clients get them when they next train)."""
        everyone = range(self.num_clients)
        if momentum is not None:
            self.set_states("momentum", everyone, {k: v[None] for k, v in momentum.items()})
        self.set_states("online", everyone, {k: v[None] for k, v in online.items()})

    @torch.no_grad()
    def averaged_client(self) -> nn.Module:
        """The client model a FedAvg now would give (a fresh copy; the bank is not changed).

        Right after a sync every client holds it already; evaluation uses this so that it never
        depends on which client happens to be first.
        """
        ids, rows = self.pool_states("online", self.pool_since_sync() or [0])
        model = copy.deepcopy(self.template()).to(self.weights.device)
        model.load_state_dict(self.average_rows(ids, rows))
        return model

    @torch.no_grad()
    def load_client(self, state: dict[str, torch.Tensor]) -> None:
        """Give every client and every momentum copy the client model state ``state``."""
        self.load_average(state, state)


@torch.no_grad()
def share_rows(rows: Rows, owned: slice) -> Rows:
    """Every process's ``rows`` ([P, ...] for the pool's P clients) as the owner of each row has
    them: each process zeroes the rows it does not own (``owned`` is its share) and one
    all-reduce per dtype adds them up (integer and bool rows travel as long)."""
    groups: dict[torch.dtype, list[str]] = {}
    for name, value in rows.items():
        dtype = value.dtype if value.is_floating_point() else torch.long
        groups.setdefault(dtype, []).append(name)
    shared = {}
    for dtype, names in groups.items():
        n = len(rows[names[0]])
        flat = torch.cat([rows[k].reshape(n, -1).to(dtype) for k in names], dim=1)
        mine = torch.zeros(n, 1, dtype=dtype, device=flat.device)
        mine[owned] = 1
        flat.mul_(mine)  # the other processes' clients: zeros here, their owner's rows there
        torch.distributed.all_reduce(flat)
        for k, part in zip(names, flat.split([rows[k][0].numel() for k in names], dim=1)):
            shared[k] = part.reshape(rows[k].shape).to(rows[k].dtype)
    return shared
