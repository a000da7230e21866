"""The attack on a training checkpoint: its FedAvg client model and images from its own data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mocosfl.api import load_datamodule, load_module
from mocosfl.errors import require_split_model
from mocosfl.privacy.attack.images import select_attack_images
from mocosfl.privacy.attack.result import AttackResult
from mocosfl.privacy.attack.run import run_attack
from mocosfl.privacy.attack.settings import AttackSettings
from mocosfl.privacy.protocol import get_protocol


def attack_checkpoint(
    ckpt_path: str,
    aux_fraction: float = 0.01,
    num_targets: int = 128,
    aux_classes: Sequence[int] | None = None,
    aux_data: Mapping[str, Any] | None = None,
    settings: AttackSettings | None = None,
    device: torch.device | str = "cpu",
    data_overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> AttackResult:
    """The attack on a training checkpoint's FedAvg client model, with the images of
    :func:`select_attack_images` from the run's own data (``data_overrides``: e.g. ``root``),
    drawn and measured as ``settings.protocol`` says."""
    settings = settings or AttackSettings()
    module = load_module(ckpt_path)
    require_split_model(module, f"the attack on {ckpt_path}")
    datamodule = load_datamodule(ckpt_path, **dict(data_overrides or {}))
    datamodule.setup()
    aux_pool = get_protocol(settings.protocol).aux_pool
    aux, targets = select_attack_images(
        datamodule, aux_fraction, num_targets, settings.seed, aux_classes, aux_data, aux_pool
    )
    client = module.bank.averaged_client()
    stats = (datamodule.mean, datamodule.std)
    return run_attack(client, aux, targets, *stats, settings, device, progress)
