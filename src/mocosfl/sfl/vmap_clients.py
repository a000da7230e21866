"""The ``vmap`` client engine: every client's tensors stacked, a step's pool in one call."""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from mocosfl.errors import ConfigError
from mocosfl.sfl.clients import ClientBank, OptimizerFactory, Rows


class VmapClientBank(ClientBank):
    """All clients as stacked tensors [N, *shape] per client parameter, run with ``torch.func``.

    A step gathers the pool's rows into leaf tensors [P, *shape], runs the pool's forward as one
    ``vmap`` of ``functional_call`` over the client model, steps SGD on those rows with each
    client's own momentum buffer, and scatters them back: clients outside the pool are never
    read or written. The SGD update is ``torch.optim.SGD``'s, row by row (per-client learning
    rates), so this engine matches :class:`~mocosfl.sfl.loop_clients.LoopClientBank`.

    Limits: the client model has no buffers (GroupNorm, the default, not BatchNorm) and the
    client optimizer is SGD.
    """

    def _add_clients(
        self, client: nn.Module, optimizer: OptimizerFactory, probe: torch.optim.Optimizer
    ) -> None:
        if any(True for _ in client.buffers()):
            raise ConfigError(
                "sfl.client_engine=vmap needs a client model without buffers (model.norm=gn); "
                "use sfl.client_engine=loop for BatchNorm clients"
            )
        if type(probe) is not torch.optim.SGD:
            raise ConfigError(
                f"sfl.client_engine=vmap steps SGD clients only, not {type(probe).__name__}; "
                "use sfl.client_engine=loop"
            )
        self.sgd = dict(probe.defaults)
        self._param_groups = probe.state_dict()["param_groups"]
        self._template = [client]  # a list keeps it out of the state dict and parameters
        for name, p in client.named_parameters():
            stack = p.detach().unsqueeze(0).repeat(self.num_clients, *[1] * p.dim())
            self.register_buffer(self._key("online", name), stack)
            self.register_buffer(self._key("momentum", name), stack.clone())
            # Optimizer state lives in the checkpoint's client_optimizers, as in the loop engine.
            self.register_buffer(self._key("sgd", name), torch.zeros_like(stack), persistent=False)
        self.register_buffer(
            "sgd_started", torch.zeros(self.num_clients, dtype=torch.bool), persistent=False
        )
        self._pool: tuple[tuple[int, ...], dict[str, torch.Tensor]] | None = None
        self._last_index: tuple[tuple[int, ...], torch.Tensor] | None = None

    @staticmethod
    def _key(kind: str, name: str) -> str:
        return f"{kind}__{name.replace('.', '__')}"

    def stacked(self, kind: str) -> dict[str, torch.Tensor]:
        """{parameter name: [N, *shape]} of ``kind`` (online | momentum | sgd)."""
        return {name: getattr(self, self._key(kind, name)) for name in self.param_names}

    def _forward(self, params: Rows, images: torch.Tensor) -> torch.Tensor:
        """Every client of ``params`` ([P, ...] rows) on its images [P, b, C, H, W]
        -> [P * b, ...]."""
        run = vmap(lambda p, x: functional_call(self.template(), p, (x,)))
        return run(params, images).flatten(0, 1)

    def _index(self, ids: Sequence[int]) -> torch.Tensor:
        """``ids`` as an index tensor on the bank's device; a step asks for its pool's several
        times, so the last one is kept rather than copied to the device again."""
        ids = tuple(ids)
        cached = self._last_index
        if cached is None or cached[0] != ids or cached[1].device != self.steps.device:
            cached = self._last_index = (
                ids,
                torch.as_tensor(ids, dtype=torch.long, device=self.steps.device),
            )
        return cached[1]

    # -- one step ---------------------------------------------------------------------------
    def encode(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        ids = tuple(ids)
        if self._pool is None or self._pool[0] != ids:
            # The pool's rows as leaves: both views of a step share them, step() reads the grads.
            rows = self.states("online", ids)
            self._pool = (ids, {n: r.requires_grad_(True) for n, r in rows.items()})
        return self._forward(self._pool[1], images)

    @torch.no_grad()
    def encode_momentum(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        return self._forward(self.states("momentum", ids), images)

    @torch.no_grad()
    def update_momentum(self, ids: Sequence[int]) -> None:
        ema, online = self.states("momentum", ids), self.states("online", ids)
        torch._foreach_lerp_(list(ema.values()), list(online.values()), 1.0 - self.ema_decay)
        self.set_states("momentum", ids, ema)

    @torch.no_grad()
    def step(self, ids: Sequence[int], lr: Callable[[int], float]) -> None:
        ids = tuple(ids)
        if self._pool is None or self._pool[0] != ids:
            raise RuntimeError(f"step({list(ids)}) without an encode() of that pool")
        leaves, self._pool = self._pool[1], None
        index = self._index(ids)
        started = self.sgd_started[index]
        lrs = torch.tensor([lr(c) for c in ids], dtype=torch.float64, device=index.device)
        momentum, dampening = self.sgd["momentum"], self.sgd["dampening"]
        weight_decay = self.sgd["weight_decay"]
        online, buffers = self.stacked("online"), self.stacked("sgd")
        for name, leaf in leaves.items():
            if leaf.grad is None:
                continue  # as torch.optim.SGD: a parameter without a gradient is not stepped
            param, grad = leaf.detach(), leaf.grad
            rows = (-1,) + (1,) * (param.dim() - 1)
            if self.sgd["maximize"]:
                grad = -grad
            if weight_decay:
                grad = grad.add(param, alpha=weight_decay)
            if momentum:
                buf = buffers[name].index_select(0, index)
                # A client's first step starts its buffer at the gradient, as SGD does.
                buf = torch.where(
                    started.view(rows), buf.mul_(momentum).add_(grad, alpha=1 - dampening), grad
                )
                buffers[name].index_copy_(0, index, buf)
                grad = grad.add(buf, alpha=momentum) if self.sgd["nesterov"] else buf
            new = param - lrs.to(param.dtype).view(rows) * grad
            online[name].index_copy_(0, index, new)
        if momentum:
            self.sgd_started[index] = True
        self._count_steps(ids)

    # -- state by client --------------------------------------------------------------------
    def states(self, kind: str, ids: Sequence[int]) -> Rows:
        index = self._index(ids)
        return {name: stack.index_select(0, index) for name, stack in self.stacked(kind).items()}

    @torch.no_grad()
    def set_states(self, kind: str, ids: Sequence[int], rows: Rows) -> None:
        index = self._index(ids)
        for name, stack in self.stacked(kind).items():
            row = rows[name].to(stack.dtype)
            stack.index_copy_(0, index, row.expand(len(index), *stack.shape[1:]))

    def optimizer_rows(self, ids: Sequence[int]) -> Rows:
        index = self._index(ids)
        rows = {
            f"sgd.{n}": stack.index_select(0, index) for n, stack in self.stacked("sgd").items()
        }
        rows["sgd_started"] = self.sgd_started[index]
        return rows

    @torch.no_grad()
    def set_optimizer_rows(self, ids: Sequence[int], rows: Rows) -> None:
        index = self._index(ids)
        for name, stack in self.stacked("sgd").items():
            stack.index_copy_(0, index, rows[f"sgd.{name}"].to(stack.dtype))
        self.sgd_started[index] = rows["sgd_started"].bool()

    def template(self) -> nn.Module:
        return self._template[0]

    # -- checkpoints: the loop engine's entries ---------------------------------------------
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for kind in ("online", "momentum"):
            for name in self.param_names:
                stack = destination.pop(prefix + self._key(kind, name))
                for c in range(self.num_clients):
                    destination[f"{prefix}{kind}.{c}.{name}"] = stack[c]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        for kind in ("online", "momentum"):
            for name in self.param_names:
                keys = [f"{prefix}{kind}.{c}.{name}" for c in range(self.num_clients)]
                if all(k in state_dict for k in keys):
                    rows = [state_dict.pop(k) for k in keys]
                    state_dict[prefix + self._key(kind, name)] = torch.stack(rows)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def optimizer_state(self) -> list[dict]:
        started = self.sgd_started.tolist()
        buffers = list(self.stacked("sgd").values())
        return [
            {
                "state": (
                    {i: {"momentum_buffer": b[c].clone()} for i, b in enumerate(buffers)}
                    if started[c]
                    else {}
                ),
                "param_groups": [dict(group) for group in self._param_groups],
            }
            for c in range(self.num_clients)
        ]

    @torch.no_grad()
    def load_optimizer_state(self, states: list[dict]) -> None:
        self._check_optimizer_states(states)
        buffers = list(self.stacked("sgd").values())
        for c, state in enumerate(states):
            saved = state["state"]
            self.sgd_started[c] = bool(saved)
            for i, buf in enumerate(buffers):
                if i in saved and saved[i].get("momentum_buffer") is not None:
                    buf[c] = saved[i]["momentum_buffer"]
                else:
                    buf[c] = 0
