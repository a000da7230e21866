"""MocoSFL on Flower's Deployment Engine (docs/deployment.md, "Flower").

``server_app`` runs ``mocosfl.train``'s training with the ``remote`` engine; its messages reach
the clients through the SuperLink as Flower messages (an ``ArrayRecord`` and a ``ConfigRecord``).
``client_app`` runs on each SuperNode, one short process per message: it forwards the message to
the long-lived ``python -m mocosfl.deploy.client`` process of its machine (the node config's
``mocosfl-socket``), which keeps the client's models, optimizer and autograd graph. Importing
this module does not import torch, so the forwarding processes start fast.
"""

import shlex
import socket
import time
from collections.abc import Mapping

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from mocosfl.deploy.local_socket import recv_frame, send_frame
from mocosfl.deploy.wire import Message, log

# Each message kind's Flower message type: "train" for what changes a client, "query" for reads.
MESSAGE_TYPES = {
    "encode": "train.encode",
    "apply": "train.apply",
    "sync": "train.sync",
    "get_state": "query.get_state",
}
PARTITION_TYPE = "query.partition"  # which client a SuperNode holds (its node config)


def to_flower(message: Message) -> RecordDict:
    arrays = ArrayRecord({name: Array(a) for name, a in message.arrays.items()})
    return RecordDict({"arrays": arrays, "config": ConfigRecord(dict(message.config))})


def from_flower(content: RecordDict, kind: str) -> Message:
    arrays = {name: array.numpy() for name, array in content["arrays"].items()}
    return Message(kind, arrays, dict(content["config"]))


def kind_of(message_type: str) -> str:
    return next(k for k, t in MESSAGE_TYPES.items() if t == message_type)


# -- the SuperNode side -----------------------------------------------------------------------
client_app = ClientApp()


def forward(message: FlowerMessage, context: Context) -> FlowerMessage:
    """Hand ``message`` to this machine's client process and return its answer."""
    request = from_flower(message.content, kind_of(message.metadata.message_type))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(context.node_config["mocosfl-socket"]))
        send_frame(sock, request)
        reply = recv_frame(sock)
    return FlowerMessage(to_flower(reply), reply_to=message)


for _type in MESSAGE_TYPES.values():
    category, action = _type.split(".")
    getattr(client_app, category)(action)(forward)


@client_app.query("partition")
def partition(message: FlowerMessage, context: Context) -> FlowerMessage:
    config = ConfigRecord({"partition-id": int(context.node_config["partition-id"])})
    return FlowerMessage(RecordDict({"config": config}), reply_to=message)


# -- the SuperLink side -----------------------------------------------------------------------
class FlowerTransport:
    """A :class:`~mocosfl.deploy.wire.ClientTransport` through a Flower ``Grid``: client c is the
    SuperNode whose node config says ``partition-id=c``. A SuperNode that has not answered after
    ``timeout`` seconds, or whose ClientApp failed, does not answer. Replies are pulled every
    ``poll`` seconds (``Grid.send_and_receive`` waits 3 s between pulls, Flower 1.42)."""

    def __init__(
        self, grid: Grid, nodes: Mapping[int, int], timeout: float, poll: float = 0.1
    ) -> None:
        self.grid, self.nodes, self.timeout, self.poll = grid, dict(nodes), timeout, poll

    def send_and_receive(self, messages: list[FlowerMessage]) -> list[FlowerMessage]:
        """The replies to ``messages`` that come within the timeout."""
        waiting = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + self.timeout
        replies: list[FlowerMessage] = []
        while waiting and time.monotonic() < deadline:
            pulled = list(self.grid.pull_messages(waiting))
            waiting -= {reply.metadata.reply_to_message_id for reply in pulled}
            replies += pulled
            if waiting:
                time.sleep(self.poll)
        return replies

    def exchange(self, requests: Mapping[int, Message]) -> dict[int, Message | None]:
        replies: dict[int, Message | None] = dict.fromkeys(requests)
        clients = {self.nodes[c]: c for c in requests if c in self.nodes}
        messages = [
            FlowerMessage(
                to_flower(requests[c]),
                dst_node_id=node,
                message_type=MESSAGE_TYPES[requests[c].kind],
            )
            for node, c in clients.items()
        ]
        for reply in self.send_and_receive(messages):
            c = clients[reply.metadata.src_node_id]
            if reply.has_error():
                log.warning("client %d: %s", c, reply.error.reason)
            else:
                replies[c] = from_flower(reply.content, requests[c].kind)
        return replies


def find_clients(grid: Grid, num_clients: int, wait: float) -> dict[int, int]:
    """``{client: node id}`` of the connected SuperNodes, once all ``num_clients`` clients are
    there or ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    nodes: dict[int, int] = {}
    while len(nodes) < num_clients and time.monotonic() < deadline:
        new = [n for n in grid.get_node_ids() if n not in nodes.values()]
        asks = [
            FlowerMessage(RecordDict(), dst_node_id=n, message_type=PARTITION_TYPE) for n in new
        ]
        for reply in grid.send_and_receive(asks, timeout=30) if asks else []:
            if not reply.has_error():
                nodes[int(reply.content["config"]["partition-id"])] = reply.metadata.src_node_id
        if len(nodes) < num_clients:
            time.sleep(1)
    return nodes


server_app = ServerApp()


@server_app.main()
def serve(grid: Grid, context: Context) -> None:
    """Train the run of the run config's ``overrides`` (``mocosfl.train``'s), writing into its
    ``output-dir``, with the SuperNodes' clients."""
    from mocosfl.deploy.server import compose_run, train_with

    run = context.run_config
    cfg = compose_run(shlex.split(str(run["overrides"])), str(run["output-dir"]))
    num_clients = int(cfg.sfl.num_clients)
    nodes = find_clients(grid, num_clients, float(run["wait-for-clients"]))
    missing = sorted(set(range(num_clients)) - set(nodes))
    if missing:
        log.warning("training without clients %s: their SuperNodes did not connect", missing)
    transport = FlowerTransport(grid, nodes, float(run["timeout"]), float(run["poll-interval"]))
    train_with(cfg, transport)
