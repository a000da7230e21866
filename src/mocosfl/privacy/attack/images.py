"""Which images an attack uses: the auxiliary set and the targets drawn from a run's data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from mocosfl.data.datasets import load_image_set
from mocosfl.data.module import FederatedDataModule
from mocosfl.errors import ConfigError
from mocosfl.privacy.protocol import AUX_POOLS

# Fewer auxiliary images than this get a warning. The paper's attacker has 1% of CIFAR's training
# images (450-500); 256 is about half of that: 8 batches of 32 an epoch and a validation tenth of
# ~26 images. Below it the decoder sees too few images to generalise to the targets and the
# validation set that picks it is a handful, so a high attack/mse measures a weak attacker more
# than a private client.
MIN_AUX_IMAGES = 256


def _seeded_choice(n: int, count: int, seed: int, stream: int) -> np.ndarray:
    """``count`` of ``range(n)`` without replacement, in random order (so that a grid of the first
    targets mixes the classes of a class-sorted split), a function of (seed, stream)."""
    return np.random.default_rng([int(seed), stream]).choice(n, count, replace=False)


def select_attack_images(
    datamodule: FederatedDataModule,
    aux_fraction: float = 0.01,
    num_targets: int = 128,
    seed: int = 0,
    aux_classes: Sequence[int] | None = None,
    aux_data: Mapping[str, Any] | None = None,
    aux_pool: str = "train",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(auxiliary uint8 [a, 3, S, S], target uint8 [num_targets, 3, S, S]) for an attack on the
    run of ``datamodule`` (set up).

    Targets: ``num_targets`` test images, fixed by ``seed``. Auxiliary images: a seeded
    ``aux_fraction`` of the run's training images (the test split never; ``aux_pool="train+val"``:
    of its training and validation splits together, the whole training set as the original,
    which holds out no validation split, draws from), or of the training split of another data
    set (``aux_data``: ``load_image_set`` arguments such as ``name`` and ``root``), optionally only
    the classes ``aux_classes``.
    """
    if not 0 < aux_fraction <= 1:
        raise ConfigError(f"attack aux_fraction={aux_fraction}; use a value in (0, 1]")
    if aux_pool not in AUX_POOLS:
        raise ConfigError(f"attack aux_pool={aux_pool!r}; use one of {', '.join(AUX_POOLS)}")
    test, _ = datamodule.split_images("test")
    if not 1 <= num_targets <= test.shape[0]:
        raise ConfigError(
            f"attack num_targets={num_targets}; the test split has {test.shape[0]} images"
        )
    targets = test[torch.from_numpy(_seeded_choice(test.shape[0], num_targets, seed, 41))]
    if aux_data:
        aux_set = load_image_set(
            split="train", image_size=datamodule.image_size, **{"download": False, **aux_data}
        )
        images, labels = aux_set.images, aux_set.labels
    else:
        splits = [datamodule.split_images(s) for s in aux_pool.split("+")]
        images, labels = (torch.cat(parts) for parts in zip(*splits))
    pool = np.arange(images.shape[0])
    if aux_classes is not None:
        pool = pool[np.isin(labels.numpy(), list(aux_classes))]
    count = round(aux_fraction * pool.shape[0])
    if count < 2:
        raise ConfigError(
            f"attack aux_fraction={aux_fraction} of {pool.shape[0]} images leaves {count}; "
            "the attack needs at least 2 auxiliary images"
        )
    warn_if_few_aux(count, pool.shape[0], aux_fraction)
    aux = images[torch.from_numpy(pool[_seeded_choice(pool.shape[0], count, seed, 43)])]
    return aux, targets


def warn_if_few_aux(count: int, pool: int, aux_fraction: float) -> None:
    """One warning line when the attacker has fewer than :data:`MIN_AUX_IMAGES` images."""
    if count < MIN_AUX_IMAGES:
        rank_zero_warn(
            f"the attacker's auxiliary set has only {count} images (aux_fraction={aux_fraction} "
            f"of {pool:,}); under {MIN_AUX_IMAGES} the decoder is weak and attack/mse overstates "
            "privacy: raise attack.aux_fraction=... or give attack.aux_data={name: ..., root: ...} "
            "(callbacks.attack.* in training)"
        )
