"""The attack on a client model: encode the auxiliary images, train a decoder, score the targets."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
from torch import nn

from mocosfl.data.transforms import normalize
from mocosfl.errors import ConfigError
from mocosfl.privacy.attack.result import AttackResult
from mocosfl.privacy.attack.scoring import in_batches, score_decoder
from mocosfl.privacy.attack.settings import AttackSettings
from mocosfl.privacy.attack.training import train_decoder
from mocosfl.privacy.decoder import Decoder
from mocosfl.privacy.protocol import get_protocol, ground_truth, to_unit


def run_attack(
    client_model: nn.Module,
    aux_images: torch.Tensor,
    target_images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    settings: AttackSettings | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> AttackResult:
    """Train a decoder on the auxiliary images and reconstruct the target images.

    ``client_model``: normalised images [B, 3, S, S] -> latents [B, C, h, h] (a copy is used, in
    eval mode); ``aux_images`` / ``target_images``: uint8 [n, 3, S, S] (or float on [0, 1]),
    normalised with ``mean`` / ``std`` as the client's training data were (the targets as
    ``settings.protocol`` says: :func:`~mocosfl.privacy.protocol.target_views`). Deterministic
    given ``settings.seed``; the caller's random number streams are left as they were.
    ``progress``: report the decoder's training on stdout
    (:class:`~mocosfl.privacy.attack.training.DecoderProgress`).
    """
    settings = settings or AttackSettings()
    protocol = get_protocol(settings.protocol)
    if aux_images.shape[0] < 2:
        raise ConfigError(
            f"the attack needs at least 2 auxiliary images (got {aux_images.shape[0]}); "
            "raise the auxiliary fraction"
        )
    device = torch.device(device)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        client = copy.deepcopy(client_model).to(device).eval().requires_grad_(False)
        latents = in_batches(client, normalize(aux_images, mean, std), device)
        num_val = min(aux_images.shape[0] - 1, max(1, round(settings.val_fraction * len(latents))))
        val = torch.zeros(len(latents), dtype=torch.bool)
        val[torch.randperm(len(latents), generator=generator)[:num_val]] = True
        decoder = Decoder(
            tuple(latents.shape[1:]),
            aux_images.shape[-1],
            settings.width,
            settings.num_blocks,
            xavier=False,  # PyTorch's default: a stronger attacker (docs/differences.md)
        ).to(device)
        pixels = ground_truth(to_unit(aux_images), protocol).to(device)
        curve, best_step = train_decoder(
            decoder, latents, pixels, val.to(device), settings, generator, progress
        )
    scores, originals, reconstructions = score_decoder(
        client, decoder, target_images, mean, std, protocol
    )
    return AttackResult(
        **scores,
        originals=originals,
        reconstructions=reconstructions,
        val_curve=curve,
        best_step=best_step,
        num_aux=int(aux_images.shape[0]),
        seconds=time.perf_counter() - start,
        protocol=protocol.name,
        decoder=decoder,
    )
