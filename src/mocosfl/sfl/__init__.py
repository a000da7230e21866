"""The MocoSFL method: module, client bank, queue, loss and momentum pieces."""

from mocosfl.sfl.clients import ClientBank
from mocosfl.sfl.loss import contrastive_accuracy, info_nce
from mocosfl.sfl.module import MocoSFL
from mocosfl.sfl.momentum import momentum_copy, update_momentum
from mocosfl.sfl.queue import NegativeQueue

__all__ = [
    "ClientBank",
    "MocoSFL",
    "NegativeQueue",
    "contrastive_accuracy",
    "info_nce",
    "momentum_copy",
    "update_momentum",
]
