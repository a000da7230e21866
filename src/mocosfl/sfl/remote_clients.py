"""The ``remote`` client engine: clients that run in other processes (``mocosfl.deploy``).

The server's MocoSFL step is the simulation's; only the client half travels. One step is two
exchanges with the pool: ``encode`` (each client updates its momentum copy, makes its own views
of the step and sends its latents) and ``apply`` (each gets the gradient of its slice and the
learning rate, and steps its optimizer). FedAvg reads and writes client models with
``get_state`` and ``set_state``. A client that does not answer, or whose reply fails its checks,
is left out of that step (docs/deployment.md).
"""

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mocosfl.deploy.tensors import check_arrays, expected_of, to_arrays
from mocosfl.deploy.wire import ClientTransport, Message, PayloadRejected, check_step, log
from mocosfl.errors import ConfigError
from mocosfl.sfl.clients import ClientBank, OptimizerFactory, Rows

ONLINE_LATENTS = ("query", "query_swapped")  # the latents whose gradients go back


def latent_names(two_way: bool) -> tuple[str, ...]:
    """The latents a client sends for one step: each view's online and momentum encoding."""
    return ("query", "key", "query_swapped", "key_swapped") if two_way else ("query", "key")


class RemoteClientBank(ClientBank):
    """Clients reached through a :class:`~mocosfl.deploy.wire.ClientTransport` (set by
    :meth:`connect`). The server keeps only the client model's structure, each client's FedAvg
    weight and step count; models, momentum copies and optimizers stay with the clients."""

    def _add_clients(
        self, client: nn.Module, optimizer: OptimizerFactory, probe: torch.optim.Optimizer
    ) -> None:
        self.model = copy.deepcopy(client)
        self.transport: ClientTransport | None = None
        self.latent_shape: tuple[int, ...] = ()
        self._latent_spec: dict = {}  # latent name -> (shape, dtype) a client's reply must have
        self.client_batch_size = 0
        self.dropped = 0
        self._pending: tuple[int, list[int], dict[str, torch.Tensor]] | None = None

    def connect(self, transport: ClientTransport, image_size: int, client_batch_size: int) -> None:
        """Reach the clients through ``transport``; their latents must have the shape the
        client model gives images of ``image_size`` pixels, ``client_batch_size`` at a time."""
        parameter = next(self.model.parameters())
        probe = torch.zeros(1, 3, image_size, image_size, dtype=parameter.dtype)
        with torch.no_grad():
            self.latent_shape = tuple(copy.deepcopy(self.model).eval()(probe).shape[1:])
        shape = (client_batch_size, *self.latent_shape)
        self._latent_spec = expected_of(
            {n: torch.empty(shape, dtype=parameter.dtype) for n in latent_names(two_way=True)}
        )
        self.transport, self.client_batch_size = transport, client_batch_size

    def _exchange(self, requests: dict[int, Message], step: int) -> dict[int, Message]:
        """The replies of the clients that answered and did not refuse (the rest are logged)."""
        if self.transport is None:
            raise ConfigError(
                "sfl.client_engine=remote has no clients: it runs under mocosfl.deploy only"
            )
        replies = self.transport.exchange(requests)
        answered = {}
        for c, request in requests.items():
            reply = replies.get(c)
            if reply is None:
                log.warning("step %d: client %d did not answer %s", step, c, request.kind)
            elif "error" in reply.config:
                log.warning(
                    "step %d: client %d refused %s: %s",
                    step,
                    c,
                    request.kind,
                    reply.config["error"],
                )
            else:
                answered[c] = reply
        return answered

    # -- one step ---------------------------------------------------------------------------
    def encode_pool(
        self, batch: dict[str, Any], two_way: bool
    ) -> tuple[list[int], dict[str, torch.Tensor]]:
        """As :meth:`ClientBank.encode_pool`; the clients make their own views (the batch's are
        not sent). The online latents come back as leaves whose ``grad`` :meth:`step` sends."""
        ids, step = batch["client_ids"].tolist(), int(batch["step"])
        names = latent_names(two_way)
        config = {"step": step, "two_way": int(two_way)}
        replies = self._exchange({c: Message("encode", config=config) for c in ids}, step)
        expected = {n: self._latent_spec[n] for n in names}
        answered, rows = [], []
        for c in ids:
            if c not in replies:
                continue
            try:
                check_step(replies[c], step)
                rows.append(check_arrays(replies[c], expected))
                answered.append(c)
            except PayloadRejected as reason:
                log.warning("step %d: latents of client %d rejected: %s", step, c, reason)
        self.dropped += len(ids) - len(answered)
        if not answered:
            self._pending = None
            return [], {}
        device = next(self.model.parameters()).device
        latents = {n: torch.cat([r[n] for r in rows]).to(device) for n in names}
        for n in ONLINE_LATENTS:
            if n in latents:
                latents[n].requires_grad_(True)
        self._pending = (step, answered, latents)
        return answered, latents

    def step(self, ids: Sequence[int], lr: Callable[[int], float]) -> None:
        """Send each client of ``ids`` its slice of the online latents' gradients and its rate."""
        step, answered, latents = self._pending
        b = self.client_batch_size
        grads = {n: t.grad for n, t in latents.items() if t.grad is not None}
        requests = {}
        for i, c in enumerate(answered):
            mine = {n: g[i * b : (i + 1) * b] for n, g in grads.items()}
            requests[c] = Message("apply", to_arrays(mine), {"step": step, "lr": float(lr(c))})
        stepped = list(self._exchange(requests, step))
        self.dropped += len(answered) - len(stepped)
        self._pending = None
        if stepped:
            self._count_steps(stepped)

    def update_momentum(self, ids: Sequence[int]) -> None:
        raise NotImplementedError("remote clients update their momentum copies in encode_pool")

    def encode(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("remote clients encode in encode_pool")

    def encode_momentum(self, ids: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("remote clients encode in encode_pool")

    # -- state by client ----------------------------------------------------------------------
    def pool_states(self, kind: str, ids: Sequence[int]) -> tuple[list[int], Rows]:
        """The state of models ``kind`` of the clients of ``ids`` that send a valid one."""
        replies = self._exchange(
            dict.fromkeys(ids, Message("get_state", config={"model": kind})), -1
        )
        expected = expected_of(self.model.state_dict())
        answered, rows = [], []
        for c in ids:
            try:
                if c in replies:
                    rows.append(check_arrays(replies[c], expected))
                    answered.append(c)
            except PayloadRejected as reason:
                log.warning("%s model of client %d rejected: %s", kind, c, reason)
        if not answered:
            return [], {}
        device = next(self.model.parameters()).device
        return answered, {k: torch.stack([r[k] for r in rows]).to(device) for k in expected}

    def states(self, kind: str, ids: Sequence[int]) -> Rows:
        answered, rows = self.pool_states(kind, ids)
        missing = sorted(set(ids) - set(answered))
        if missing:
            raise RuntimeError(f"clients {missing} did not send their {kind} model")
        return rows

    def set_states(self, kind: str, ids: Sequence[int], rows: Rows) -> None:
        ids = list(ids)
        requests = {}
        for i, c in enumerate(ids):
            state = {k: v[i if len(v) > 1 else 0] for k, v in rows.items()}
            requests[c] = Message("set_state", to_arrays(state), {"model": kind})
        self._exchange(requests, -1)

    def template(self) -> nn.Module:
        return self.model

    def optimizer_rows(self, ids: Sequence[int]) -> Rows:
        raise ConfigError("remote clients keep their optimizers: run the server as one process")

    def set_optimizer_rows(self, ids: Sequence[int], rows: Rows) -> None:
        raise ConfigError("remote clients keep their optimizers: run the server as one process")

    def optimizer_state(self) -> list[dict]:
        return []  # with the clients

    def load_optimizer_state(self, states: list[dict]) -> None:
        if states:
            raise ConfigError("this checkpoint holds client optimizers: resume it as a simulation")
