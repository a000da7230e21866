"""The ``loop`` client engine: one module and one optimizer per client, a step's pool run one
client after the other (the reference the ``vmap`` engine is tested against)."""

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.sfl.clients import ClientBank, OptimizerFactory, Rows
from mocosfl.sfl.momentum import momentum_copy, update_momentum


class LoopClientBank(ClientBank):
    """The ``loop`` engine: a list of client modules, each with its own optimizer."""

    def _add_clients(
        self, client: nn.Module, optimizer: OptimizerFactory, probe: torch.optim.Optimizer
    ) -> None:
        self.online = nn.ModuleList(copy.deepcopy(client) for _ in range(self.num_clients))
        momentum = momentum_copy(self.momentum_part(client))
        self.momentum = nn.ModuleList(copy.deepcopy(momentum) for _ in range(self.num_clients))
        self.optimizers = [optimizer(params=m.parameters()) for m in self.online]

    def momentum_part(self, model: nn.Module) -> nn.Module:
        """The part of client model ``model`` that has a momentum copy: all of it (MoCo)."""
        return model

    def encode(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.online[c](x) for c, x in zip(ids, images)])

    @torch.no_grad()
    def encode_momentum(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.momentum[c](x) for c, x in zip(ids, images)])

    def update_momentum(self, ids: Sequence[int]) -> None:
        # One fused EMA over the whole pool's tensors.
        online = [p for c in ids for p in self.momentum_part(self.online[c]).parameters()]
        ema = [p for c in ids for p in self.momentum[c].parameters()]
        update_momentum(online, ema, self.ema_decay)

    def step(self, ids: Sequence[int], lr: Callable[[int], float]) -> None:
        for c in ids:
            opt = self.optimizers[c]
            for group in opt.param_groups:
                group["lr"] = lr(c)
            opt.step()
            opt.zero_grad(set_to_none=True)
        self._count_steps(ids)

    def states(self, kind: str, ids: Sequence[int]) -> Rows:
        models = getattr(self, kind)
        states = [models[c].state_dict() for c in ids]
        return {key: torch.stack([s[key] for s in states]) for key in states[0]}

    def set_states(self, kind: str, ids: Sequence[int], rows: Rows) -> None:
        models = getattr(self, kind)
        ids = list(ids)
        rows = {k: v.expand(len(ids), *v.shape[1:]) for k, v in rows.items()}
        for i, c in enumerate(ids):
            models[c].load_state_dict({k: v[i] for k, v in rows.items()})

    def template(self) -> nn.Module:
        return self.online[0]

    def optimizer_rows(self, ids: Sequence[int]) -> Rows:
        if not all(isinstance(self.optimizers[c], torch.optim.SGD) for c in ids):
            raise ConfigError("several processes exchange client SGD state only; use SGD clients")
        buffers: dict[str, list[torch.Tensor]] = {name: [] for name in self.param_names}
        started = []
        for c in ids:
            state = self.optimizers[c].state
            params = list(self.online[c].parameters())
            bufs = [state.get(p, {}).get("momentum_buffer") for p in params]
            started.append(bufs[0] is not None)
            for name, p, buf in zip(self.param_names, params, bufs):
                buffers[name].append(torch.zeros_like(p) if buf is None else buf)
        rows = {f"sgd.{name}": torch.stack(b) for name, b in buffers.items()}
        rows["sgd_started"] = torch.tensor(started, device=self.steps.device)
        return rows

    @torch.no_grad()
    def set_optimizer_rows(self, ids: Sequence[int], rows: Rows) -> None:
        for i, c in enumerate(ids):
            state = self.optimizers[c].state
            for name, p in zip(self.param_names, self.online[c].parameters()):
                if rows["sgd_started"][i]:
                    state[p]["momentum_buffer"] = rows[f"sgd.{name}"][i].clone()
                else:
                    state.pop(p, None)

    def optimizer_state(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_optimizer_state(self, states: list[dict]) -> None:
        self._check_optimizer_states(states)
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)
