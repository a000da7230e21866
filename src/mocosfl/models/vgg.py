"""VGG-13 as a flat layer list: one entry per conv (conv3x3 + norm + ReLU) and one per max-pool."""

from __future__ import annotations

from torch import nn

from mocosfl.models.layers import conv2d, make_norm

# The original MocoSFL counts VGG cut layers over these entries, max-pools ('M') included.
_VGG13_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M",
)  # fmt: skip


def vgg13_layers(
    width: int = 64,
    norm: str = "gn",
    weight_std: bool = True,
    image_size: int = 32,
    stem: str = "auto",
) -> tuple[list[nn.Module], int]:
    """VGG-13 as 15 layers (10 convs, 5 max-pools); channel counts scaled by width / 64.

    Input [B, 3, H, W] -> last layer [B, 8 * width, H/32, W/32]; feature_dim = 8 * width.
    ``image_size`` and ``stem`` are accepted for a uniform builder signature and ignored: VGG
    has no separate stem, and the server's global average pooling absorbs larger maps.
    """
    del image_size, stem
    layers: list[nn.Module] = []
    in_c = 3
    for entry in _VGG13_CFG:
        if entry == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        out_c = int(entry) * width // 64
        layers.append(
            nn.Sequential(
                conv2d(in_c, out_c, 3, padding=1, weight_std=weight_std),
                make_norm(norm, out_c),
                nn.ReLU(inplace=True),
            )
        )
        in_c = out_c
    return layers, in_c
