"""The attacker's decoder: client latents back to images.

Follows the shape of the original's ``res_normN4C64`` (reference §4.1): a residual block into
``width`` channels, ``num_blocks`` residual blocks, one transposed convolution per 2x the latent is
smaller than the image, and a 3-channel output squashed to [0, 1] by a sigmoid. The residual block
is the backbone's own ``BasicBlock`` (BatchNorm, plain convolutions: the decoder trains on batches
of 32, where batch statistics are fine).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.models.layers import init_xavier_, make_norm
from mocosfl.models.resnet import BasicBlock

_NORM = "bn"


def upsampling_steps(latent_size: int, image_size: int) -> int:
    """Number of 2x up-samplings from a ``latent_size`` map to an ``image_size`` image.

    The ratio must be a power of two (1 when the latent keeps the image's resolution).
    """
    ratio = image_size / latent_size
    steps = round(math.log2(ratio)) if ratio >= 1 else -1
    if steps < 0 or latent_size * 2**steps != image_size:
        raise ConfigError(
            f"the decoder cannot map a {latent_size}x{latent_size} latent to a "
            f"{image_size}x{image_size} image: the ratio must be a power of two"
        )
    return steps


class Decoder(nn.Module):
    """Latents [B, C, h, h] -> images [B, 3, S, S] in [0, 1], for S = h * 2**k.

    ``width`` channels throughout (64 in the original; a narrow one is enough for tests),
    ``num_blocks`` residual blocks at the latent's resolution, then ``k`` transposed-convolution
    up-samplings (3x3, stride 2, each followed by BatchNorm and ReLU).
    """

    def __init__(
        self,
        latent_shape: tuple[int, ...],
        image_size: int,
        width: int = 64,
        num_blocks: int = 4,
    ) -> None:
        super().__init__()
        if len(latent_shape) != 3:
            raise ConfigError(
                f"the attack needs a spatial latent [C, h, w]; this client gives {latent_shape}"
            )
        if width < 1 or num_blocks < 0:
            raise ConfigError(
                f"decoder width={width}, num_blocks={num_blocks}: use width >= 1, blocks >= 0"
            )
        channels, height, _ = latent_shape
        layers: list[nn.Module] = [BasicBlock(channels, width, 1, _NORM, weight_std=False)]
        layers += [BasicBlock(width, width, 1, _NORM, weight_std=False) for _ in range(num_blocks)]
        for _ in range(upsampling_steps(height, image_size)):
            layers += [
                nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1),
                make_norm(_NORM, width),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.Conv2d(width, 3, 3, padding=1), nn.Sigmoid()]
        self.net = init_xavier_(nn.Sequential(*layers))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)
