"""The MocoSFL method: module, client bank, queue, loss and momentum pieces."""

from mocosfl.sfl.clients import ClientBank
from mocosfl.sfl.engines import make_client_bank
from mocosfl.sfl.loop_clients import LoopClientBank
from mocosfl.sfl.loss import contrastive_accuracy, info_nce
from mocosfl.sfl.module import MocoSFL
from mocosfl.sfl.momentum import momentum_copy, update_momentum
from mocosfl.sfl.queue import NegativeQueue
from mocosfl.sfl.vmap_clients import VmapClientBank

__all__ = [
    "ClientBank",
    "LoopClientBank",
    "MocoSFL",
    "NegativeQueue",
    "VmapClientBank",
    "contrastive_accuracy",
    "info_nce",
    "make_client_bank",
    "momentum_copy",
    "update_momentum",
]
