"""One data holder of a deployment: its client model and the messages it answers.

``python -m mocosfl.deploy.client --partition-id K --socket PATH [overrides]`` serves client K
of the run that ``mocosfl.train`` would start with ``overrides`` on the Unix socket ``PATH``.
"""

import argparse
import time
from collections.abc import Sequence
from typing import Any

import hydra
import lightning as L
import torch

from mocosfl.data import build_datamodule
from mocosfl.data.stream import FederatedStepDataset
from mocosfl.deploy import tensors, wire
from mocosfl.deploy.local_socket import serve
from mocosfl.deploy.wire import Message, PayloadRejected
from mocosfl.errors import ConfigError
from mocosfl.report.row_config import compose_train
from mocosfl.sfl.clients import MODEL_KINDS, ClientBank
from mocosfl.sfl.loop_clients import LoopClientBank
from mocosfl.sfl.remote_clients import ONLINE_LATENTS
from mocosfl.utils.run import user_errors, with_num_threads

DTYPES = {
    "32-true": torch.float32,
    "32": torch.float32,
    "64-true": torch.float64,
    "64": torch.float64,
}


def model_dtype(precision: Any) -> torch.dtype:
    """The dtype of a deployed run's models: ``trainer.precision`` 32-true or 64-true."""
    if str(precision) not in DTYPES:
        raise ConfigError(f"trainer.precision={precision}: a deployment runs in 32-true or 64-true")
    return DTYPES[str(precision)]


class DeployedClient:
    """Client ``client_id`` of a run: its model, momentum copy and optimizer (a one-client
    :class:`~mocosfl.sfl.loop_clients.LoopClientBank`, the simulation's own code) and its share
    of the training stream, from which it makes its views of every step it plays."""

    def __init__(
        self, client_id: int, bank: ClientBank, stream: FederatedStepDataset, dtype: torch.dtype
    ) -> None:
        self.client_id, self.bank, self.stream, self.dtype = client_id, bank, stream, dtype
        self.last_step = -1  # the last step it encoded: an older one is stale
        self._pending: tuple[int, dict[str, torch.Tensor]] | None = None

    @classmethod
    def from_config(cls, cfg: Any, client_id: int) -> "DeployedClient":
        """Client ``client_id`` of the run config ``cfg``, built as the simulation builds its
        clients (same seed, same order of random draws), so both start from the same weights."""
        dtype = model_dtype(cfg.trainer.precision)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
        num_clients = datamodule.plan.num_clients
        if not 0 <= client_id < num_clients:
            raise ConfigError(
                f"--partition-id {client_id}: this run has clients 0..{num_clients - 1}"
            )
        with tensors.default_dtype(dtype):
            client = hydra.utils.instantiate(cfg.model).client
        optimizer = hydra.utils.instantiate(cfg.module.client_optimizer)
        bank = LoopClientBank(client, 1, optimizer, cfg.module.ema_decay)
        return cls(client_id, bank, datamodule.step_dataset(), dtype)

    def handle(self, message: Message) -> Message:
        """The reply to ``message``; a request that fails its checks is refused with the reason
        (logged here, and counted by the server as this client missing the step)."""
        handlers = {
            "encode": self._encode,
            "apply": self._apply,
            "get_state": self._get_state,
            "sync": self._sync,
        }
        started = time.perf_counter()
        try:
            if message.kind not in handlers:
                raise PayloadRejected(f"unknown message kind {message.kind!r}")
            reply = handlers[message.kind](message)
            reply.config["compute_s"] = time.perf_counter() - started
            return reply
        except PayloadRejected as reason:
            wire.log.warning("client %d: refused %s: %s", self.client_id, message.kind, reason)
            return Message(message.kind, config={"error": str(reason)})

    def _encode(self, message: Message) -> Message:
        step = int(message.config.get("step", -1))
        if step <= self.last_step:
            raise PayloadRejected(f"encode for step {step}, after step {self.last_step}")
        try:
            query, key = self.stream.client_views(step, self.client_id)
        except ValueError as error:
            raise PayloadRejected(str(error)) from error
        batch = {
            "client_ids": torch.tensor([0]),
            "query": query[None].to(self.dtype),
            "key": key[None].to(self.dtype),
        }
        _, latents = self.bank.encode_pool(batch, bool(message.config.get("two_way", 0)))
        self.last_step, self._pending = step, (step, latents)
        return Message("encode", tensors.to_arrays(latents), {"step": step})

    def _apply(self, message: Message) -> Message:
        if self._pending is None:
            raise PayloadRejected("apply without an encode before it")
        step, latents = self._pending
        wire.check_step(message, step)
        lr = message.config.get("lr")
        if not isinstance(lr, float) or not 0 <= lr < float("inf"):
            raise PayloadRejected(f"apply: learning rate {lr!r}, expected a float >= 0")
        online = {n: latents[n] for n in ONLINE_LATENTS if n in latents}
        grads = tensors.check_arrays(message, tensors.expected_of(online), subset=True)
        self._pending = None
        torch.autograd.backward([online[n] for n in grads], list(grads.values()))
        self.bank.step([0], lambda _: lr)
        return Message("apply", config={"step": step})

    def _model_kind(self, message: Message) -> str:
        kind = message.config.get("model")
        if kind not in MODEL_KINDS:
            raise PayloadRejected(f"{message.kind}: model {kind!r}, expected online or momentum")
        return kind

    def _get_state(self, message: Message) -> Message:
        rows = self.bank.states(self._model_kind(message), [0])
        return Message("get_state", tensors.to_arrays({k: v[0] for k, v in rows.items()}))

    def _sync(self, message: Message) -> Message:
        """Load the last average: the online model, and the momentum copy if it is sent; a
        ``restart`` (the server does not know this client's state) also takes any step next."""
        with_momentum = any(name.startswith("momentum.") for name in message.arrays)
        kinds = MODEL_KINDS if with_momentum else ("online",)
        expected = {}
        for kind in kinds:
            state = {f"{kind}.{k}": v[0] for k, v in self.bank.states(kind, [0]).items()}
            expected.update(tensors.expected_of(state))
        state = tensors.check_arrays(message, expected)
        for kind in kinds:
            prefix = f"{kind}."
            rows = {k[len(prefix) :]: v[None] for k, v in state.items() if k.startswith(prefix)}
            self.bank.set_states(kind, [0], rows)
        if message.config.get("restart"):
            self.last_step, self._pending = -1, None
        return Message("sync")


@with_num_threads
def serve_client(cfg: Any, partition_id: int, socket_path: str) -> None:
    """Build client ``partition_id`` of run config ``cfg`` and answer on ``socket_path``."""
    client = DeployedClient.from_config(cfg, partition_id)
    print(f"client {partition_id}: serving on {socket_path}", flush=True)
    serve(client.handle, socket_path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mocosfl.deploy.client", description="Serve one client of a deployment."
    )
    parser.add_argument("--partition-id", type=int, required=True, help="which client")
    parser.add_argument("--socket", required=True, help="the Unix socket to answer on")
    parser.add_argument("overrides", nargs="*", help="the run's settings, as mocosfl.train's")
    args = parser.parse_args(argv)
    with user_errors():
        serve_client(compose_train(args.overrides), args.partition_id, args.socket)


if __name__ == "__main__":
    main()
