"""The attacker's decoder: client latents back to images.

The original's ``res_normN4C64`` (docs/paper.md, "Attack") in its BatchNorm form: the one its attack
trains, and its TAResSFL simulator at batches of 20 or more. ``width`` channels, pre-activation
residual blocks with biased convolutions, one transposed convolution per 2x the latent is smaller
than the image, and a last residual block down to 3 channels squashed to [0, 1] by a sigmoid. For
a 64 x 32 x 32 latent and a 32 x 32 image it has 520,931 parameters (:func:`parameter_count`),
as the original's; 449,579 for the 4 x 16 x 16 latent of a C4S2 bottleneck.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.models.layers import init_xavier_

# Stages between the residual blocks and the output block: the first ``k`` (one per 2x up-sampling)
# are transposed convolutions and, when k < 2, residual blocks make up the rest. The original
# keeps this depth at any cut, so a full-resolution latent gets two more blocks, not fewer layers.
_MIN_STAGES = 2


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


class PreActBlock(nn.Module):
    """[B, c_in, h, w] -> [B, c_out, h, w]: BN, ReLU, conv 3x3, BN, ReLU, conv 3x3, plus the
    input (through a 1x1 convolution and BN when the channels change). Nothing follows the sum:
    the decoder puts its ReLU (or the final sigmoid) after the block."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.shortcut: nn.Module = nn.Identity()
        if c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def _upsampling(width: int) -> list[nn.Module]:
    """[B, width, h, h] -> [B, width, 2h, 2h]: transposed conv 3x3 stride 2, then BN."""
    return [
        nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(width),
    ]


class Decoder(nn.Module):
    """Latents [B, C, h, h] -> images [B, 3, S, S] in [0, 1], for S = h * 2**k.

    A residual block from ``C`` to ``width`` channels, ``num_blocks`` residual blocks, then
    ``max(k, 2)`` stages (``k`` up-samplings, residual blocks for the rest), each followed by a
    ReLU, and a residual block to 3 channels with a sigmoid. ``width`` is 64 and ``num_blocks`` 4
    in the original; a narrow one is enough for tests. ``xavier``: Xavier-uniform weights (the
    original's TAResSFL simulator); False keeps PyTorch's default initialisation (its attack's).
    """

    def __init__(
        self,
        latent_shape: tuple[int, ...],
        image_size: int,
        width: int = 64,
        num_blocks: int = 4,
        xavier: bool = True,
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
        steps = upsampling_steps(height, image_size)
        layers: list[nn.Module] = [PreActBlock(channels, width), nn.ReLU()]
        for _ in range(num_blocks):
            layers += [PreActBlock(width, width), nn.ReLU()]
        for stage in range(max(steps, _MIN_STAGES)):
            layers += _upsampling(width) if stage < steps else [PreActBlock(width, width)]
            layers.append(nn.ReLU())
        layers += [PreActBlock(width, 3), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        if xavier:
            init_xavier_(self.net)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of ``module`` (BatchNorm's running statistics are not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
