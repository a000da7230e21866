"""Building blocks shared by every backbone: convolutions, normalisation and initialisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mocosfl.errors import ConfigError

NORMS = ("gn", "bn")

# Channels per GroupNorm group, as in the original MocoSFL (num_groups = channels // 4).
_GN_CHANNELS_PER_GROUP = 4
_WS_EPS = 1e-5


class WSConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (Qiao et al. 2019), recomputed on every forward.

    Each output channel's kernel is shifted to zero mean and scaled to unit std over
    (in_channels / groups, kh, kw) before the convolution. Together with GroupNorm this replaces
    BatchNorm, which breaks down at the per-client batch size of 1 used in MocoSFL.
    Input [B, in, H, W] -> output [B, out, H', W'], exactly like ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Unbiased std, matching the original implementation's ``Tensor.std``.
        std, mean = torch.std_mean(self.weight, dim=(1, 2, 3), keepdim=True)
        weight = (self.weight - mean) / (std + _WS_EPS)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalisation over ``channels`` feature maps: ``"gn"`` (4 channels per group) or ``"bn"``.

    Input and output are [B, channels, H, W].
    """
    if norm == "gn":
        return nn.GroupNorm(max(1, channels // _GN_CHANNELS_PER_GROUP), channels)
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    raise ConfigError(f"model.norm={norm!r} is not supported: valid choices are {', '.join(NORMS)}")


def conv2d(
    in_c: int,
    out_c: int,
    kernel: int,
    stride: int = 1,
    padding: int | None = None,
    weight_std: bool = True,
    groups: int = 1,
) -> nn.Conv2d:
    """Bias-free convolution ([B, in_c, H, W] -> [B, out_c, H/stride, W/stride]).

    The bias is dropped because a normalisation layer always follows. ``padding`` defaults to
    ``kernel // 2`` ("same" for odd kernels at stride 1).
    """
    cls = WSConv2d if weight_std else nn.Conv2d
    pad = kernel // 2 if padding is None else padding
    return cls(in_c, out_c, kernel, stride=stride, padding=pad, groups=groups, bias=False)


def init_xavier_(module: nn.Module) -> nn.Module:
    """Re-initialise ``module`` in place as the original does, and return it.

    Conv2d, ConvTranspose2d and Linear get Xavier-uniform weights and zero biases; normalisation
    layers get weight 1 and bias 0.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
