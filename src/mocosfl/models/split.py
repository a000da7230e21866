"""Cut a backbone into a client part and a server part, optionally with a latent bottleneck."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.models.layers import STEMS, check_choice, init_weights_
from mocosfl.models.mobilenet import mobilenetv2_layers
from mocosfl.models.resnet import resnet18_layers, resnet50_layers
from mocosfl.models.vgg import vgg13_layers

LayerBuilder = Callable[..., tuple[list[nn.Module], int]]

ARCHITECTURES: dict[str, LayerBuilder] = {
    "resnet18": resnet18_layers,
    "resnet50": resnet50_layers,
    "vgg13": vgg13_layers,
    "mobilenetv2": mobilenetv2_layers,
}

_BOTTLENECK_RE = re.compile(r"C(\d+)S(\d+)")


@dataclass
class SplitModel:
    """A backbone cut in two.

    ``client``: [B, 3, H, W] -> [B, *latent_shape]. ``server``: [B, *latent_shape] ->
    [B, feature_dim] (ends in global average pooling + flatten). ``cut_layer`` client layers of
    ``num_layers`` backbone layers sit on the client, not counting a bottleneck encoder.
    """

    client: nn.Sequential
    server: nn.Sequential
    feature_dim: int
    cut_layer: int
    num_layers: int
    latent_shape: tuple[int, ...]


def _backbone_layers(
    arch: str, width: int, norm: str, weight_std: bool, image_size: int, init: str, stem: str
) -> tuple[list[nn.Module], int]:
    """Layer list initialised by rule ``init`` and feature_dim for ``arch``, after validating
    the settings."""
    check_choice("model.arch", arch, tuple(ARCHITECTURES))
    check_choice("model.stem", stem, STEMS)
    if width < 1:
        raise ConfigError(f"model.width={width} is invalid: it must be a positive integer")
    if image_size < 1:
        raise ConfigError(f"data.image_size={image_size} is invalid: it must be a positive integer")
    layers, feature_dim = ARCHITECTURES[arch](
        width=width, norm=norm, weight_std=weight_std, image_size=image_size, stem=stem
    )
    init_weights_(nn.ModuleList(layers), init)
    return layers, feature_dim


def _global_pool() -> list[nn.Module]:
    """[B, C, H, W] -> [B, C]."""
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]


def build_backbone(
    arch: str = "resnet18",
    width: int = 64,
    norm: str = "gn",
    weight_std: bool = True,
    image_size: int = 32,
    init: str = "legacy",
    stem: str = "auto",
) -> nn.Sequential:
    """The unsplit network: [B, 3, image_size, image_size] -> [B, feature_dim].

    Built with the same calls, in the same order, as ``build_split_model``, so under the same
    torch seed both get identical backbone weights.
    """
    layers, _ = _backbone_layers(arch, width, norm, weight_std, image_size, init, stem)
    return nn.Sequential(*layers, *_global_pool())


def parse_bottleneck(bottleneck: str) -> tuple[int, int]:
    """``"C{c}S{s}"`` -> (latent channels c, spatial downsampling factor s)."""
    match = _BOTTLENECK_RE.fullmatch(bottleneck)
    channels, stride = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if channels < 1 or stride < 2 or stride & (stride - 1):
        raise ConfigError(
            f"model.bottleneck={bottleneck!r} is invalid: use 'C<channels>S<stride>' with "
            "channels >= 1 and stride a power of 2 >= 2, e.g. 'C4S2'"
        )
    return channels, stride


def _bottleneck_pair(
    spec: str, cut_channels: int, init: str
) -> tuple[list[nn.Module], list[nn.Module]]:
    """Encoder for the client and decoder for the server.

    Encoder: [B, cut_channels, H, W] -> [B, c, H/s, W/s] via log2(s) stride-2 convs.
    Decoder: the mirror image with transposed convs, back to [B, cut_channels, H, W]
    (for H divisible by s). Plain convs with bias: they are not followed by a norm.
    """
    channels, stride = parse_bottleneck(spec)
    steps = int(math.log2(stride))
    encoder: list[nn.Module] = []
    decoder: list[nn.Module] = []
    for i in range(steps):
        enc_in = cut_channels if i == 0 else channels
        encoder += [nn.Conv2d(enc_in, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        dec_out = cut_channels if i == steps - 1 else channels
        decoder += [
            nn.ConvTranspose2d(channels, dec_out, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
        ]
    init_weights_(nn.ModuleList(encoder + decoder), init)
    return encoder, decoder


@torch.no_grad()
def _output_shape(module: nn.Module, image_size: int) -> tuple[int, ...]:
    """Per-image output shape of ``module`` on a [1, 3, image_size, image_size] input.

    Runs in eval mode so a BatchNorm on a 1x1 map cannot fail on a batch of one; the module's
    previous mode is restored.
    """
    was_training = module.training
    module.eval()
    shape = tuple(module(torch.zeros(1, 3, image_size, image_size)).shape[1:])
    module.train(was_training)
    return shape


def build_split_model(
    arch: str = "resnet18",
    cut_layer: int = 1,
    width: int = 64,
    norm: str = "gn",
    weight_std: bool = True,
    bottleneck: str | None = None,
    image_size: int = 32,
    init: str = "legacy",
    stem: str = "auto",
) -> SplitModel:
    """Build ``arch`` and cut it after ``cut_layer`` layers (1 = stem only).

    Client: [B, 3, image_size, image_size] -> [B, *latent_shape]; server: [B, *latent_shape] ->
    [B, feature_dim]. With ``bottleneck="C{c}S{s}"`` the client ends in a stride-2 conv encoder to
    c channels at 1/s resolution and the server starts with the matching transposed-conv decoder.
    ``init`` is the weight initialisation rule (``INITS``), ``stem`` the stem rule (``STEMS``).
    Deterministic given torch's global seed.
    """
    layers, feature_dim = _backbone_layers(arch, width, norm, weight_std, image_size, init, stem)
    num_layers = len(layers)
    # The server must keep at least one backbone layer, so the last layer is never a valid cut.
    if not 1 <= cut_layer <= num_layers - 1:
        raise ConfigError(
            f"sfl.cut_layer={cut_layer} is out of range for {arch}: valid cut layers are "
            f"1..{num_layers - 1} (1 = stem only)"
        )
    client_layers = layers[:cut_layer]
    encoder: list[nn.Module] = []
    decoder: list[nn.Module] = []
    if bottleneck is not None:
        cut_channels = _output_shape(nn.Sequential(*client_layers), image_size)[0]
        encoder, decoder = _bottleneck_pair(bottleneck, cut_channels, init)
    client = nn.Sequential(*client_layers, *encoder)
    server = nn.Sequential(*decoder, *layers[cut_layer:], *_global_pool())
    return SplitModel(
        client=client,
        server=server,
        feature_dim=feature_dim,
        cut_layer=cut_layer,
        num_layers=num_layers,
        latent_shape=_output_shape(client, image_size),
    )
