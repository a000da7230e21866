"""Projection heads appended after the server's global average pooling: MoCo v2's, and the
BYOL projector and predictor of the FL-SSL baselines."""

from __future__ import annotations

from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.models.layers import init_xavier_


class ProjectionHead(nn.Sequential):
    """MoCo v2 MLP head: Linear -> ReLU -> Linear, no BatchNorm (as in MocoSFL's ``V2`` preset).

    Input [B, in_dim] (pooled backbone features) -> output [B, out_dim] (embedding before
    L2-normalisation, which the loss applies). Xavier-uniform weights, zero biases: both
    ``model.init`` rules give plain Linear layers that, so the head takes no ``init``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 1024, out_dim: int = 1024) -> None:
        if min(in_dim, hidden_dim, out_dim) < 1:
            raise ConfigError(
                f"projection head dims (in={in_dim}, hidden={hidden_dim}, out={out_dim}) are "
                "invalid: all must be positive integers"
            )
        super().__init__(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )
        self.in_dim = in_dim
        self.out_dim = out_dim
        init_xavier_(self)


class BYOLHead(nn.Sequential):
    """BYOL's projector or predictor MLP: Linear -> BatchNorm1d -> ReLU -> Linear, PyTorch's
    default initialisation (as EasyFL's fedssl ``MLP``). [B, in_dim] -> [B, out_dim].

    Its BatchNorm needs at least 2 images a batch in training.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 2048) -> None:
        if min(in_dim, hidden_dim, out_dim) < 1:
            raise ConfigError(
                f"BYOL head dims (in={in_dim}, hidden={hidden_dim}, out={out_dim}) are "
                "invalid: all must be positive integers"
            )
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        self.in_dim = in_dim
        self.out_dim = out_dim
