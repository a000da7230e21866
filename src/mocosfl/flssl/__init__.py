"""Federated self-supervised baselines that train whole networks on the clients (no split)."""

from mocosfl.flssl.fedbyol import FedBYOL
from mocosfl.flssl.fedema import FedEMA
from mocosfl.flssl.flmoco import FLMoCo

__all__ = ["FLMoCo", "FedBYOL", "FedEMA"]
