"""``sfl.client_engine``: which :class:`~mocosfl.sfl.clients.ClientBank` runs the clients."""

from collections.abc import Sequence

from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.sfl.clients import ClientBank, OptimizerFactory
from mocosfl.sfl.loop_clients import LoopClientBank
from mocosfl.sfl.remote_clients import RemoteClientBank
from mocosfl.sfl.vmap_clients import VmapClientBank

# The engines a config may name; ``remote`` is the deployment server's (mocosfl.deploy).
CLIENT_ENGINES: dict[str, type[ClientBank]] = {"loop": LoopClientBank, "vmap": VmapClientBank}


def make_client_bank(
    engine: str,
    client: nn.Module,
    num_clients: int,
    optimizer: OptimizerFactory,
    ema_decay: float = 0.99,
    weights: Sequence[float] | None = None,
) -> ClientBank:
    """The client bank of engine ``engine`` (loop | vmap | remote) holding ``num_clients``
    copies of ``client``."""
    engines = {**CLIENT_ENGINES, "remote": RemoteClientBank}
    if engine not in engines:
        raise ConfigError(f"sfl.client_engine={engine!r} is not known; choose loop or vmap")
    return engines[engine](client, num_clients, optimizer, ema_decay, weights)
