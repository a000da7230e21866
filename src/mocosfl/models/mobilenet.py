"""CIFAR MobileNetV2 as a flat layer list: stem, one entry per inverted-residual stage, 1x1 head."""

from __future__ import annotations

import torch
from torch import nn

from mocosfl.models.layers import conv2d, imagenet_like, make_norm

# (expansion t, output channels c at width 32, repeats n, first stride s). The second stage's
# stride is 1 instead of ImageNet's 2, the usual CIFAR adaptation.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_LAST_CHANNELS = 1280


def _scaled(channels: int, width: int) -> int:
    """``channels * width / 32`` rounded to a multiple of 4 (>= 4): GroupNorm uses 4 per group."""
    return max(4, int(channels * width / 32 / 4 + 0.5) * 4)


def _conv_norm_relu6(
    in_c: int, out_c: int, kernel: int, stride: int, norm: str, weight_std: bool, groups: int = 1
) -> list[nn.Module]:
    return [
        conv2d(in_c, out_c, kernel, stride=stride, weight_std=weight_std, groups=groups),
        make_norm(norm, out_c),
        nn.ReLU6(inplace=True),
    ]


class InvertedResidual(nn.Module):
    """Expand 1x1 (skipped for t=1), depthwise 3x3, linear project 1x1, residual when shapes match.

    [B, in_c, H, W] -> [B, out_c, H/stride, W/stride].
    """

    def __init__(
        self, in_c: int, out_c: int, stride: int, expansion: int, norm: str, weight_std: bool
    ) -> None:
        super().__init__()
        hidden = in_c * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += _conv_norm_relu6(in_c, hidden, 1, 1, norm, weight_std)
        layers += _conv_norm_relu6(hidden, hidden, 3, stride, norm, weight_std, groups=hidden)
        layers += [conv2d(hidden, out_c, 1, weight_std=weight_std), make_norm(norm, out_c)]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_c == out_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


def stem_stride(image_size: int, stem: str) -> int:
    """Stride of the 3x3 stem conv: 2 for ImageNet-like inputs under ``model.stem=auto``.

    ``legacy`` keeps stride 1 at every size, as the original's MobileNetV2 (which runs at 32 px
    only).
    """
    return 2 if stem == "auto" and imagenet_like(image_size) else 1


def mobilenetv2_layers(
    width: int = 32,
    norm: str = "gn",
    weight_std: bool = True,
    image_size: int = 32,
    stem: str = "auto",
) -> tuple[list[nn.Module], int]:
    """MobileNetV2 as 9 layers: stem, 7 inverted-residual stages, final 1x1 conv.

    Channels scale with width / 32 (rounded to multiples of 4). Input [B, 3, H, W] -> last layer
    [B, feature_dim, H / (8 * s), W / (8 * s)] for the stem's stride s (``stem_stride``);
    feature_dim = 1280 * width / 32.
    """
    stem_c = _scaled(32, width)
    layers: list[nn.Module] = [
        nn.Sequential(
            *_conv_norm_relu6(3, stem_c, 3, stem_stride(image_size, stem), norm, weight_std)
        )
    ]
    in_c = stem_c
    for t, c, n, s in _STAGES:
        out_c = _scaled(c, width)
        blocks = []
        for i in range(n):
            blocks.append(InvertedResidual(in_c, out_c, s if i == 0 else 1, t, norm, weight_std))
            in_c = out_c
        layers.append(nn.Sequential(*blocks))
    last_c = _scaled(_LAST_CHANNELS, width)
    layers.append(nn.Sequential(*_conv_norm_relu6(in_c, last_c, 1, 1, norm, weight_std)))
    return layers, last_c
