"""What every federated MoCo method (MocoSFL, FL-MoCo) shares besides its training step: the
FedAvg weights, the checks of the shared settings, and the run state a checkpoint carries."""

import random
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

from mocosfl.errors import ConfigError


def fedavg_weights_of(
    fedavg_weights: str, client_sizes: Sequence[int] | None
) -> Sequence[int] | None:
    """The client bank's FedAvg weights for ``sfl.fedavg_weights``: the clients' data sizes
    (``data``) or None, equal weights (``uniform``)."""
    if fedavg_weights not in ("data", "uniform"):
        raise ConfigError(f"sfl.fedavg_weights={fedavg_weights!r}: choose data or uniform")
    if fedavg_weights == "data" and client_sizes is None:
        raise ConfigError("sfl.fedavg_weights=data needs the clients' data sizes")
    return client_sizes if fedavg_weights == "data" else None


def moco_checks(
    num_clients: int, queue_size: int, temperature: float, ema_decay: float
) -> list[tuple[bool, str]]:
    """The (ok, message) checks of the settings every federated MoCo method shares."""
    return [
        (num_clients >= 1, f"sfl.num_clients={num_clients}; use at least 1"),
        (queue_size >= 1, f"sfl.queue_size={queue_size}; use at least 1"),
        (
            temperature > 0,
            f"sfl.temperature={temperature}; use a positive value (it divides the logits)",
        ),
        (0 <= ema_decay < 1, f"sfl.ema_decay={ema_decay}; use a value in [0, 1)"),
    ]


def save_run_state(module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """What a checkpoint needs besides the module's tensors to resume exactly: the client
    optimizers of ``module.bank``, the run config and the random streams."""
    checkpoint["client_optimizers"] = module.bank.optimizer_state()
    checkpoint["run_config"] = module.run_config
    checkpoint["run_source"] = module.run_source
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # Plain types and tensors only, so the checkpoint loads with torch.load(weights_only=True).
    checkpoint["rng_states"] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def load_run_state(checkpoint: dict[str, Any]) -> list[dict] | None:
    """Restore the random streams :func:`save_run_state` saved; returns the client optimizers'
    states, for the module to load once it is on its device (``on_train_start``)."""
    rng = checkpoint.get("rng_states")
    if rng:
        torch.set_rng_state(rng["torch"])
        kind, keys, *rest = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
        random.setstate(rng["python"])
    return checkpoint.get("client_optimizers")


class ClientRunState:
    """The checkpoint hooks of a LightningModule whose clients live in ``self.bank`` (MocoSFL and
    the FL-SSL methods): every checkpoint carries :func:`save_run_state`'s run state, and a
    resume restores the random streams at once and the client optimizers at the start of
    training, after the strategy moved the module, so that their buffers land by their
    parameters. Put it before ``L.LightningModule`` among the bases."""

    _pending_client_optimizers: list[dict] | None = None

    def on_train_start(self) -> None:
        if self._pending_client_optimizers is not None:
            self.bank.load_optimizer_state(self._pending_client_optimizers)
            self._pending_client_optimizers = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_run_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_client_optimizers = load_run_state(checkpoint)
