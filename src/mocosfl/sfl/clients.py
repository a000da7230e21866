"""The client side of split learning: every client's model, momentum copy and optimizer."""

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from mocosfl.sfl.momentum import momentum_copy, update_momentum

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class ClientBank(nn.Module):
    """All clients of a MocoSFL run, simulated in one process (the ``loop`` engine).

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
        self.online = nn.ModuleList(copy.deepcopy(client) for _ in range(num_clients))
        self.momentum = nn.ModuleList(momentum_copy(client) for _ in range(num_clients))
        self.optimizers = [optimizer(params=m.parameters()) for m in self.online]
        w = torch.ones(num_clients) if weights is None else torch.as_tensor(weights, dtype=torch.float)
        if w.shape != (num_clients,):
            raise ValueError(f"expected {num_clients} FedAvg weights, got {tuple(w.shape)}")
        self.register_buffer("weights", w.float())
        self.register_buffer("participated", torch.zeros(num_clients, dtype=torch.bool))
        self.register_buffer("steps", torch.zeros(num_clients, dtype=torch.long))

    # -- one step ---------------------------------------------------------------------------
    def encode(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        """Online latents, with the autograd graph kept for :meth:`backward`.

        images: [P, b, C, H, W], row i belonging to client ``ids[i]``. Returns [P * b, *latent].
        """
        return torch.cat([self.online[c](x) for c, x in zip(ids, images)])

    @torch.no_grad()
    def encode_momentum(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        """Key latents from each client's momentum copy. images: [P, b, C, H, W] -> [P * b, ...]."""
        return torch.cat([self.momentum[c](x) for c, x in zip(ids, images)])

    def update_momentum(self, ids: Sequence[int]) -> None:
        """EMA update of the pool's momentum copies, fused over the whole pool."""
        online = [p for c in ids for p in self.online[c].parameters()]
        ema = [p for c in ids for p in self.momentum[c].parameters()]
        update_momentum(online, ema, self.ema_decay)

    def step(self, ids: Sequence[int], lr: Callable[[int], float]) -> None:
        """Step the optimizer of every client in the pool; ``lr(c)`` gives client c's rate."""
        for c in ids:
            opt = self.optimizers[c]
            for group in opt.param_groups:
                group["lr"] = lr(c)
            opt.step()
            opt.zero_grad(set_to_none=True)
        index = torch.as_tensor(list(ids), device=self.steps.device)
        self.steps[index] += 1
        self.participated[index] = True

    # -- FedAvg -----------------------------------------------------------------------------
    def pool_since_sync(self) -> list[int]:
        """Clients that trained since the last FedAvg (the round's pool)."""
        return self.participated.nonzero().flatten().tolist()

    @torch.no_grad()
    def average(self, models: nn.ModuleList, ids: Sequence[int]) -> dict[str, torch.Tensor]:
        """Weighted average of the state of ``models[c]`` over ``ids`` (floating tensors only;
        integer buffers such as BatchNorm's batch counter are taken from the first client)."""
        w = self.weights[list(ids)]
        w = w / w.sum()
        states = [models[c].state_dict() for c in ids]
        out = {}
        for key, first in states[0].items():
            if first.is_floating_point():
                out[key] = sum(wi * s[key] for wi, s in zip(w.tolist(), states))
            else:
                out[key] = first.clone()
        return out

    @torch.no_grad()
    def divergence(self, ids: Sequence[int], average: dict[str, torch.Tensor]) -> float:
        """Mean L2 distance of the pool's online models to their average (the paper's Eq. 4)."""
        dists = []
        for c in ids:
            sq = sum(
                (p - average[name]).pow(2).sum() for name, p in self.online[c].named_parameters()
            )
            dists.append(float(sq) ** 0.5)
        return sum(dists) / len(dists)

    @torch.no_grad()
    def fedavg(self, sync_momentum: bool = True) -> dict[str, float] | None:
        """Average the round's pool and load the result into every client.

        With ``sync_momentum`` the momentum copies are averaged the same way (MonAcoSFL's fix);
        without it they stay as they are (the original). Optimizer state stays per client.
        Returns ``{"divergence": ..., "pool_size": ...}``, or None if nobody trained.
        """
        ids = self.pool_since_sync()
        if not ids:
            return None
        avg = self.average(self.online, ids)
        stats = {"divergence": self.divergence(ids, avg), "pool_size": float(len(ids))}
        avg_momentum = self.average(self.momentum, ids) if sync_momentum else None
        for c in range(self.num_clients):
            self.online[c].load_state_dict(avg)
            if avg_momentum is not None:
                self.momentum[c].load_state_dict(avg_momentum)
        self.participated.zero_()
        return stats

    @torch.no_grad()
    def averaged_client(self) -> nn.Module:
        """The client model a FedAvg now would give (a fresh copy; the bank is not changed).

        Right after a sync every client holds it already; evaluation uses this so that it never
        depends on which client happens to be first.
        """
        ids = self.pool_since_sync() or [0]
        model = copy.deepcopy(self.online[0])
        model.load_state_dict(self.average(self.online, ids))
        return model

    # -- checkpointing ----------------------------------------------------------------------
    def optimizer_state(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_optimizer_state(self, states: list[dict]) -> None:
        if len(states) != self.num_clients:
            raise ValueError(
                f"checkpoint has {len(states)} client optimizers, this run {self.num_clients}"
            )
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)
