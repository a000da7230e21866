"""The attacker's settings, :class:`AttackSettings`: checked when made, read from a config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mocosfl.errors import ConfigError, settings_from
from mocosfl.privacy.protocol import DEFAULT_PROTOCOL, get_protocol


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """How the attacker trains its decoder and which protocol measures it. The defaults are the
    original's (docs/paper.md, "Attack"): Adam 1e-3, batch 32, 50 epochs, a 64-wide decoder with
    4 residual blocks, 10% validation; ``protocol`` names a
    :data:`~mocosfl.privacy.protocol.PROTOCOLS` preset (``corrected`` or the original's
    ``paper``)."""

    epochs: int = 50
    steps: int | None = None  # a fixed number of decoder steps instead of ``epochs``
    batch_size: int = 32
    lr: float = 1e-3  # Adam
    width: int = 64  # decoder channels
    num_blocks: int = 4  # residual blocks at the latent's resolution
    val_fraction: float = 0.1  # share of the auxiliary set that selects the decoder
    seed: int = 0  # decoder initialisation, the train/val split and the batch order
    protocol: str = DEFAULT_PROTOCOL

    def __post_init__(self) -> None:
        get_protocol(self.protocol)  # an unknown name is a ConfigError now, not after training
        checks = [
            (self.epochs >= 1, f"attack epochs={self.epochs}; use at least 1"),
            (self.steps is None or self.steps >= 1, f"attack steps={self.steps}; use >= 1 or null"),
            (self.batch_size >= 1, f"attack batch_size={self.batch_size}; use at least 1"),
            (self.lr > 0, f"attack lr={self.lr}; use a positive learning rate"),
            (0 < self.val_fraction < 1, f"attack val_fraction={self.val_fraction}; use (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> AttackSettings:
        """Settings from a config mapping; an unknown key is a one-line ConfigError."""
        return settings_from(cls, values, "attack")
