"""Scoring reconstructions: the MSE, SSIM and PSNR of an attack, and a kept decoder on targets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from mocosfl.privacy.protocol import AttackProtocol, get_protocol, target_views, zero_padded_ssim

_ENCODE_BATCH = 256  # images per forward pass when encoding or decoding whole sets


def reconstruction_metrics(
    reconstructions: torch.Tensor, originals: torch.Tensor, zero_padded: bool = False
) -> dict[str, float]:
    """MSE, SSIM (11x11 Gaussian window, sigma 1.5; ``zero_padded``: the window sees zeros beyond
    the border, as the original's, else torchmetrics' reflection) and PSNR of [n, 3, S, S] images
    on [0, 1], each the mean over images."""
    if zero_padded:
        ssim = zero_padded_ssim(reconstructions, originals)
    else:
        ssim = structural_similarity_index_measure(reconstructions, originals, data_range=1.0)
    return {
        "mse": float(mean_squared_error(reconstructions, originals)),
        "ssim": float(ssim),
        "psnr": float(
            peak_signal_noise_ratio(reconstructions, originals, data_range=1.0, dim=(1, 2, 3))
        ),
    }


@torch.no_grad()
def in_batches(fn: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``fn`` over ``inputs`` [n, ...] in chunks on ``device``; the outputs back on ``device``."""
    return torch.cat([fn(x.to(device)) for x in inputs.split(_ENCODE_BATCH)])


def score_decoder(
    client: nn.Module,
    decoder: nn.Module,
    target_images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    protocol: str | AttackProtocol,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """(scores, originals, reconstructions) of ``decoder`` on the targets uint8 [n, 3, S, S] as
    ``protocol`` presents and scores them (:func:`~mocosfl.privacy.protocol.target_views`); both
    image tensors float [n, 3, S, S] on [0, 1], on the CPU. ``client`` and ``decoder`` share a
    device and are put in eval mode. A decoder trained under one protocol can be scored under
    another: that separates what the protocols train from what they score."""
    protocol = get_protocol(protocol)
    device = next(decoder.parameters()).device
    inputs, originals = target_views(target_images, mean, std, protocol)
    client, decoder = client.eval(), decoder.eval()
    reconstructions = in_batches(decoder, in_batches(client, inputs, device), device).cpu()
    originals = originals.cpu()
    scores = reconstruction_metrics(reconstructions, originals, protocol.zero_padded_ssim)
    return scores, originals, reconstructions
