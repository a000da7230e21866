"""Learning-rate schedules as pure functions of a step count, so a resumed run recomputes them."""

import math

from mocosfl.errors import ConfigError

# The original's --num_epoch, which every paper script passes: the epoch count its cosine
# schedules run over before the sampling ratio stretches it (docs/differences.md, "legacy
# schedules").
LEGACY_EPOCHS = 200


def cosine_factor(step: int, total: int) -> float:
    """Cosine decay from 1 at step 0 to 0 at ``total`` (clamped after it)."""
    if total <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def legacy_periodic_cosine_factor(step: int, period: int) -> float:
    """The original's client schedule (docs/differences.md, "client
    learning-rate schedule").

    ``CosineAnnealingLR(T_max=period)`` stepped once per client step: the rate swings between
    its base value and 0 with a period of ``2 * period`` steps and never settles.
    """
    return 0.5 * (1.0 + math.cos(math.pi * step / period))


def legacy_client_period(num_clients: int, clients_per_step: int) -> int:
    """T_max of the original's client cosine: its epoch count, ``--num_epoch`` (200) times
    ``int(1 / client_sample_ratio)`` for a ratio of ``clients_per_step / num_clients``: 200 for
    5 or 100 clients in pools of all, 800 for 20 in pools of 5, 400 for 200 and 2000 for 1000 in
    pools of 100. Integer division gives ``int(1 / ratio)`` without its float rounding."""
    return LEGACY_EPOCHS * (int(num_clients) // int(clients_per_step))


class LRSchedule:
    """Learning-rate factor for the server (kind ``cosine_step`` or ``cosine_epoch``) or the
    clients (``cosine_step`` or ``legacy_per_client_step``).

    ``cosine_step``: cosine over the step budget, evaluated at the server step.
    ``cosine_epoch``: the original server schedule, cosine over its code epochs (one pass over a
    client's data, ``epoch_steps`` steps), constant within an epoch.
    ``legacy_per_client_step``: :func:`legacy_periodic_cosine_factor` of the client's own step
    count, with period ``legacy_period`` (None until the run sets it: :func:`legacy_client_period`).
    """

    KINDS = ("cosine_step", "cosine_epoch", "legacy_per_client_step", "constant")

    def __init__(self, kind: str, legacy_period: int | None = None) -> None:
        if kind not in self.KINDS:
            raise ConfigError(
                f"unknown learning-rate schedule {kind!r} (sfl.server_schedule / "
                f"sfl.client_schedule); use one of {', '.join(self.KINDS)}"
            )
        self.kind = kind
        self.legacy_period = legacy_period

    @property
    def per_client(self) -> bool:
        """Whether the factor depends on a client's own step count."""
        return self.kind == "legacy_per_client_step"

    def factor(
        self, server_step: int, total_steps: int, epoch_steps: int, own_steps: int = 0
    ) -> float:
        if self.kind == "cosine_step":
            return cosine_factor(server_step, total_steps)
        if self.kind == "cosine_epoch":
            epochs = math.ceil(total_steps / epoch_steps)
            return cosine_factor(server_step // epoch_steps, epochs)
        if self.kind == "legacy_per_client_step":
            if self.legacy_period is None:
                raise RuntimeError("the legacy client period is not set (MocoSFL.setup sets it)")
            return legacy_periodic_cosine_factor(own_steps, self.legacy_period)
        return 1.0
