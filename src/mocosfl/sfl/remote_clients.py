"""The ``remote`` client engine: clients that run in other processes (``mocosfl.deploy``).

The server's MocoSFL step is the simulation's; only the client half travels. One step is two
exchanges with the pool: ``encode`` (each client updates its momentum copy, makes its own views
of the step and sends its latents) and ``apply`` (each gets the gradient of its slice and the
learning rate, and steps its optimizer). FedAvg reads the round's client models with
``get_state``; the server keeps the average and a client gets it (``sync``) before its next step,
so the average travels once to each client that trains again, and a client that missed a
message (it may have restarted) or the clients of a resumed run start from it. A client that
does not answer, or whose reply fails its checks, is left out of that step (docs/deployment.md).
"""

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mocosfl.costs.traffic import MB
from mocosfl.deploy.tensors import check_arrays, expected_of, to_arrays
from mocosfl.deploy.wire import ClientTransport, Message, PayloadRejected, check_step, log
from mocosfl.errors import ConfigError
from mocosfl.sfl.clients import ClientBank, OptimizerFactory, Rows

ONLINE_LATENTS = ("query", "query_swapped")  # the latents whose gradients go back
# The cost accounting's part (mocosfl.costs.traffic) of each message's arrays: sent, received.
TRAFFIC = {
    "sync": ("model_down", None),
    "encode": (None, "latents_up"),
    "apply": ("gradients_down", None),
    "get_state": (None, "model_up"),
}


def latent_names(two_way: bool) -> tuple[str, ...]:
    """The latents a client sends for one step: each view's online and momentum encoding."""
    return ("query", "key", "query_swapped", "key_swapped") if two_way else ("query", "key")


def compute_seconds(reply: Message | None) -> float:
    """The seconds a client says it computed for ``reply`` (0 if it does not say)."""
    value = reply.config.get("compute_s") if reply is not None else None
    ok = isinstance(value, float) and math.isfinite(value) and value >= 0
    return value if ok else 0.0


def forget_deliveries(bank: "RemoteClientBank", incompatible_keys: Any) -> None:
    """After a resume nobody is known to hold the average: each client gets it again."""
    bank.delivered.fill_(-1)


class RemoteClientBank(ClientBank):
    """Clients reached through a :class:`~mocosfl.deploy.wire.ClientTransport` (set by
    :meth:`connect`). The server keeps each client's FedAvg weight and step count and the last
    average; the clients' own models, momentum copies and optimizers stay with them.

    Modules and buffers (part of the checkpoint, besides the base class's):
        model: the client model holding the last FedAvg's average (the initial one before it).
        momentum_model: the last average of the momentum copies (the initial one before it).
        version: [] long, FedAvgs so far; delivered: [N] long, the version each client holds
            (-1: unknown, after a missed message or a resume).
    """

    def _add_clients(
        self, client: nn.Module, optimizer: OptimizerFactory, probe: torch.optim.Optimizer
    ) -> None:
        self.model = copy.deepcopy(client)
        self.momentum_model = copy.deepcopy(client).requires_grad_(False)
        self.synced_momentum = True  # whether the last FedAvg averaged the momentum copies
        self.register_buffer("version", torch.zeros((), dtype=torch.long))
        self.register_buffer("delivered", torch.zeros(self.num_clients, dtype=torch.long))
        self.register_load_state_dict_post_hook(forget_deliveries)
        self.transport: ClientTransport | None = None
        self.latent_shape: tuple[int, ...] = ()
        self._latent_spec: dict = {}  # latent name -> (shape, dtype) a client's reply must have
        self.client_batch_size = 0
        self.dropped = 0  # clients left out of a step so far
        self.megabytes: Counter[str] = Counter()  # array bytes on the wire by traffic part
        self.seconds: Counter[str] = Counter()  # in exchanges; the slowest client's compute
        self._started: float | None = None  # when the first step began
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
        started = time.perf_counter()
        replies = self.transport.exchange(requests)
        self.seconds["exchange"] += time.perf_counter() - started
        self.seconds["client"] += max(map(compute_seconds, replies.values()), default=0.0)
        answered = {}
        for c, request in requests.items():
            reply = replies.get(c)
            sent, received = TRAFFIC[request.kind]
            if sent:
                self.megabytes[sent] += request.nbytes / MB
            if received and reply is not None:
                self.megabytes[received] += reply.nbytes / MB
            if reply is None or "error" in reply.config:
                self.delivered[c] = -1  # it may have restarted: give it the average again
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
        if self._started is None:
            self._started = time.perf_counter()
        ids = self._deliver(ids, step)
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
        self.dropped += len(batch["client_ids"]) - len(answered)
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

    def run_stats(self) -> dict[str, float]:
        """``train/clients_dropped``; ``deploy/<part>_mb``, the array megabytes of each traffic
        part of the cost accounting on the wire, all clients together; ``deploy/wall_s`` since
        the first step began, of which ``deploy/exchange_s`` waiting for clients, of which
        ``deploy/client_s`` the slowest client of each exchange computing (docs/deployment.md)."""
        stats = {"train/clients_dropped": float(self.dropped)}
        stats.update({f"deploy/{part}_mb": float(mb) for part, mb in self.megabytes.items()})
        if self._started is not None:
            stats["deploy/wall_s"] = time.perf_counter() - self._started
        stats.update({f"deploy/{name}_s": seconds for name, seconds in self.seconds.items()})
        return stats

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
        raise NotImplementedError("remote clients receive only the average (load_average)")

    @torch.no_grad()
    def load_average(
        self, online: dict[str, torch.Tensor], momentum: dict[str, torch.Tensor] | None
    ) -> None:
        """Keep the average; every client gets it before its next step (:meth:`_deliver`)."""
        self.model.load_state_dict(online)
        if momentum is not None:
            self.momentum_model.load_state_dict(momentum)
        self.synced_momentum = momentum is not None
        self.version += 1

    def _deliver(self, ids: list[int], step: int) -> list[int]:
        """Send the last average to the clients of ``ids`` that do not hold it; returns those
        that hold it now. A client in an unknown state (``restart``) gets the momentum copy too,
        the online average if the momentum copies are not averaged, and takes any step next."""
        version = int(self.version)
        requests = {}
        for c in ids:
            held = int(self.delivered[c])
            if held == version:
                continue
            restart = held < 0
            arrays = {f"online.{k}": v for k, v in self.model.state_dict().items()}
            if self.synced_momentum or restart:
                momentum = self.momentum_model if self.synced_momentum else self.model
                arrays.update({f"momentum.{k}": v for k, v in momentum.state_dict().items()})
            config = {"step": step, "version": version, "restart": int(restart)}
            requests[c] = Message("sync", to_arrays(arrays), config)
        if not requests:
            return ids
        for c in self._exchange(requests, step):
            self.delivered[c] = version
        return [c for c in ids if int(self.delivered[c]) == version]

    @torch.no_grad()
    def averaged_client(self) -> nn.Module:
        """As :meth:`ClientBank.averaged_client`; right after a FedAvg, the kept average (the
        clients hold it only once they train again)."""
        if self.pool_since_sync():
            return super().averaged_client()
        return copy.deepcopy(self.model)

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
