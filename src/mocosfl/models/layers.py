"""Building blocks shared by every backbone: convolutions, normalisation and initialisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mocosfl.errors import ConfigError

NORMS = ("gn", "bn")
# model.stem: "auto" picks the stem by a size threshold, "legacy" by the original's exact sizes.
STEMS = ("auto", "legacy")

# Channels per GroupNorm group, as in the original MocoSFL (num_groups = channels // 4).
_GN_CHANNELS_PER_GROUP = 4
_WS_EPS = 1e-5
# Under model.stem=auto, inputs larger than this are ImageNet-like (e.g. 224 px).
_MAX_CIFAR_LIKE_SIZE = 64
_XAVIER_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def check_choice(key: str, value: object, choices: Sequence[str]) -> None:
    """Raise the one-line ConfigError for setting ``key`` when ``value`` is not in ``choices``."""
    if value not in choices:
        raise ConfigError(
            f"{key}={value!r} is not supported: valid choices are {', '.join(choices)}"
        )


def imagenet_like(image_size: int) -> bool:
    """Whether ``model.stem=auto`` gives ``image_size`` px inputs the strided ImageNet stem."""
    return image_size > _MAX_CIFAR_LIKE_SIZE


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
    check_choice("model.norm", norm, NORMS)
    if norm == "gn":
        return nn.GroupNorm(max(1, channels // _GN_CHANNELS_PER_GROUP), channels)
    return nn.BatchNorm2d(channels)


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


def _xavier_(m: nn.Conv2d | nn.ConvTranspose2d | nn.Linear) -> None:
    """Xavier-uniform weight (gain 1), zero bias."""
    nn.init.xavier_uniform_(m.weight)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def init_xavier_(module: nn.Module) -> nn.Module:
    """Re-initialise ``module`` in place with Xavier-uniform everywhere, and return it.

    Conv2d (WSConv2d included), ConvTranspose2d and Linear get Xavier-uniform weights and zero
    biases; normalisation layers get weight 1 and bias 0. The original spares its WSConv2d
    (``init_legacy_``; docs/differences.md, initialisation).
    """
    for m in module.modules():
        if isinstance(m, _XAVIER_TYPES):
            _xavier_(m)
        elif isinstance(m, (nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def init_legacy_(module: nn.Module) -> nn.Module:
    """Re-initialise ``module`` in place with the original MocoSFL's rule, and return it.

    Only modules whose type is exactly Conv2d, ConvTranspose2d or Linear get Xavier-uniform
    weights and zero biases. Subclasses keep PyTorch's construction-time default, which for
    WSConv2d is kaiming_uniform(a=sqrt(5)): std 1/sqrt(3 * fan_in) instead of Xavier's
    sqrt(2 / (fan_in + fan_out)) (docs/differences.md, initialisation). Norm layers keep
    PyTorch's weight 1, bias 0, the same values ``init_xavier_`` sets.
    """
    for m in module.modules():
        if type(m) in _XAVIER_TYPES:
            _xavier_(m)
    return module


_INITIALISERS = {"xavier": init_xavier_, "legacy": init_legacy_}
INITS = tuple(_INITIALISERS)


def init_weights_(module: nn.Module, init: str) -> nn.Module:
    """Re-initialise ``module`` in place by rule ``init`` (``model.init``), and return it."""
    check_choice("model.init", init, INITS)
    return _INITIALISERS[init](module)
