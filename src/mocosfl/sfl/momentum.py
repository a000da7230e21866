"""Momentum (EMA) encoders as small reusable pieces."""

import copy

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` to be updated by :func:`update_momentum`."""
    ema = copy.deepcopy(module)
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_momentum(online: list[torch.Tensor], ema: list[torch.Tensor], decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * online`` over matching tensor lists, in one fused call.

    Taking flat lists lets a caller update the momentum copies of a whole pool of clients at once.
    Buffers (norm statistics) are not averaged, as in MoCo.
    """
    if ema:
        torch._foreach_lerp_(ema, online, 1.0 - decay)
