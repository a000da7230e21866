"""Clients in the server's own process, reached through copies of every message: the
deployment's logic without a network (the tests' reference, and a way to debug a deployment)."""

from collections.abc import Mapping

import torch

from mocosfl.deploy.client import DeployedClient
from mocosfl.deploy.tensors import default_dtype
from mocosfl.deploy.wire import Message


def copy_message(message: Message) -> Message:
    """What the other side receives: its own arrays, nothing shared with the sender."""
    arrays = {name: array.copy() for name, array in message.arrays.items()}
    return Message(message.kind, arrays, dict(message.config))


class LoopbackTransport:
    """A :class:`~mocosfl.deploy.wire.ClientTransport` to :class:`DeployedClient` objects."""

    def __init__(self, clients: Mapping[int, DeployedClient]) -> None:
        self.clients = dict(clients)

    def exchange(self, requests: Mapping[int, Message]) -> dict[int, Message | None]:
        replies: dict[int, Message | None] = {}
        for c, request in requests.items():
            client = self.clients.get(c)
            if client is None:  # not connected: it does not answer
                replies[c] = None
                continue
            # torch's default dtype of a fresh process, as a client in its own process has it
            # (the server may be inside Lightning's float64 context).
            with default_dtype(torch.float32):
                replies[c] = copy_message(client.handle(copy_message(request)))
        return replies
