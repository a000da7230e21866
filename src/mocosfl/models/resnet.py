"""ResNet-18/50 as flat layer lists (stem, then one entry per residual block): cuts are slices."""

from __future__ import annotations

import torch
from torch import nn

from mocosfl.models.layers import conv2d, imagenet_like, make_norm

# The original's stem by exact input size (32 px and any size not listed: 3x3 stride 1).
_LEGACY_STEMS = {224: (7, 2), 64: (3, 2)}


def stem_geometry(image_size: int, stem: str) -> tuple[int, int]:
    """(kernel, stride) of the stem conv for ``image_size`` px inputs under ``model.stem``.

    ``auto``: 3x3 stride 1 up to 64 px, 7x7 stride 2 above. ``legacy``: the original's rule,
    keyed on exact sizes: 224 px 7x7/2, 64 px 3x3/2, any other size 3x3/1.
    """
    if stem == "legacy":
        return _LEGACY_STEMS.get(image_size, (3, 1))
    return (7, 2) if imagenet_like(image_size) else (3, 1)


def make_stem(out_c: int, norm: str, weight_std: bool, image_size: int, stem: str) -> nn.Sequential:
    """Conv + norm + ReLU: [B, 3, H, W] -> [B, out_c, H / stride, W / stride].

    Kernel and stride from ``stem_geometry``; "same" padding, no max-pool, as in the original.
    """
    kernel, stride = stem_geometry(image_size, stem)
    conv = conv2d(3, out_c, kernel, stride=stride, weight_std=weight_std)
    return nn.Sequential(conv, make_norm(norm, out_c), nn.ReLU(inplace=True))


def _shortcut(in_c: int, out_c: int, stride: int, norm: str, weight_std: bool) -> nn.Module:
    """Identity when the shape is kept, else a 1x1 projection + norm."""
    if stride == 1 and in_c == out_c:
        return nn.Identity()
    return nn.Sequential(
        conv2d(in_c, out_c, 1, stride=stride, padding=0, weight_std=weight_std),
        make_norm(norm, out_c),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual: [B, in_c, H, W] -> [B, out_c, H/stride, W/stride]."""

    def __init__(self, in_c: int, out_c: int, stride: int, norm: str, weight_std: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv2d(in_c, out_c, 3, stride=stride, weight_std=weight_std),
            make_norm(norm, out_c),
            nn.ReLU(inplace=True),
            conv2d(out_c, out_c, 3, weight_std=weight_std),
            make_norm(norm, out_c),
        )
        self.shortcut = _shortcut(in_c, out_c, stride, norm, weight_std)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4, plus residual.

    [B, in_c, H, W] -> [B, 4 * mid_c, H/stride, W/stride].
    """

    expansion = 4

    def __init__(self, in_c: int, mid_c: int, stride: int, norm: str, weight_std: bool) -> None:
        super().__init__()
        out_c = mid_c * self.expansion
        self.body = nn.Sequential(
            conv2d(in_c, mid_c, 1, padding=0, weight_std=weight_std),
            make_norm(norm, mid_c),
            nn.ReLU(inplace=True),
            conv2d(mid_c, mid_c, 3, stride=stride, weight_std=weight_std),
            make_norm(norm, mid_c),
            nn.ReLU(inplace=True),
            conv2d(mid_c, out_c, 1, padding=0, weight_std=weight_std),
            make_norm(norm, out_c),
        )
        self.shortcut = _shortcut(in_c, out_c, stride, norm, weight_std)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _resnet_layers(
    block: type[BasicBlock] | type[Bottleneck],
    blocks_per_stage: tuple[int, ...],
    width: int,
    norm: str,
    weight_std: bool,
    image_size: int,
    stem: str,
) -> tuple[list[nn.Module], int]:
    expansion = getattr(block, "expansion", 1)
    layers: list[nn.Module] = [make_stem(width, norm, weight_std, image_size, stem)]
    in_c = width
    for stage, n_blocks in enumerate(blocks_per_stage):
        mid_c = width * 2**stage
        for i in range(n_blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(block(in_c, mid_c, stride, norm, weight_std))
            in_c = mid_c * expansion
    return layers, in_c


def resnet18_layers(
    width: int = 64,
    norm: str = "gn",
    weight_std: bool = True,
    image_size: int = 32,
    stem: str = "auto",
) -> tuple[list[nn.Module], int]:
    """ResNet-18 as 9 layers: stem + 8 BasicBlocks; feature_dim = 8 * width.

    Input [B, 3, H, W] with H = W = image_size; the last layer outputs
    [B, 8 * width, H / (8 * s), W / (8 * s)] for the stem's stride s (``stem_geometry``).
    """
    return _resnet_layers(BasicBlock, (2, 2, 2, 2), width, norm, weight_std, image_size, stem)


def resnet50_layers(
    width: int = 64,
    norm: str = "gn",
    weight_std: bool = True,
    image_size: int = 32,
    stem: str = "auto",
) -> tuple[list[nn.Module], int]:
    """ResNet-50 as 17 layers: stem + 16 Bottleneck blocks; feature_dim = 32 * width.

    Input [B, 3, H, W] with H = W = image_size; the last layer outputs
    [B, 32 * width, H / (8 * s), W / (8 * s)] for the stem's stride s (``stem_geometry``).
    """
    return _resnet_layers(Bottleneck, (3, 4, 6, 3), width, norm, weight_std, image_size, stem)
