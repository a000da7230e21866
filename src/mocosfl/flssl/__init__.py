"""Federated self-supervised baselines that train whole networks on the clients (no split)."""

from mocosfl.flssl.flmoco import FLMoCo

__all__ = ["FLMoCo"]
