"""Learning-rate schedules as pure functions of a step count, so a resumed run recomputes them."""

import math

from mocosfl.errors import ConfigError


def cosine_factor(step: int, total: int) -> float:
    """Cosine decay from 1 at step 0 to 0 at ``total`` (clamped after it)."""
    if total <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def legacy_periodic_cosine_factor(step: int, period: int) -> float:
    """The original's client schedule (reference section 6, bug 2).

    ``CosineAnnealingLR(T_max=period)`` stepped once per client step: the rate swings between
    its base value and 0 with a period of ``2 * period`` steps and never settles.
    """
    return 0.5 * (1.0 + math.cos(math.pi * step / period))


class LRSchedule:
    """Learning-rate factor for the server (kind ``cosine_step`` or ``cosine_epoch``) or the
    clients (``cosine_step`` or ``legacy_per_client_step``).

    ``cosine_step``: cosine over the step budget, evaluated at the server step.
    ``cosine_epoch``: the original server schedule, cosine over epochs, constant within an epoch.
    ``legacy_per_client_step``: :func:`legacy_periodic_cosine_factor` of the client's own step count.
    """

    KINDS = ("cosine_step", "cosine_epoch", "legacy_per_client_step", "constant")

    def __init__(self, kind: str, legacy_period: int = 200) -> None:
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
        self, server_step: int, total_steps: int, steps_per_epoch: int, own_steps: int = 0
    ) -> float:
        if self.kind == "cosine_step":
            return cosine_factor(server_step, total_steps)
        if self.kind == "cosine_epoch":
            epochs = math.ceil(total_steps / steps_per_epoch)
            return cosine_factor(server_step // steps_per_epoch, epochs)
        if self.kind == "legacy_per_client_step":
            return legacy_periodic_cosine_factor(own_steps, self.legacy_period)
        return 1.0
