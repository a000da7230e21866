"""FedAvg at the end of every round and at the end of training."""

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from mocosfl.data.datamodule import PoolSchedule
from mocosfl.errors import ConfigError
from mocosfl.utils.logging import log_now


class FedAvgCallback(L.Callback):
    """Ends every round with FedAvg of the clients that trained in it: the round's pool.

    Rounds are the data module's (its ``pool_schedule``), so that a round never spans two
    pools: every ``every`` steps, or with ``sfl.pool=epoch`` after every ``every``-th step of a
    code epoch and after its last one (:class:`~mocosfl.data.datamodule.PoolSchedule`). Without
    such a data module, every ``every`` steps.

    The averaging itself (weights, momentum copies) belongs to the module's client bank, which
    knows who trained since the last FedAvg; this callback only decides when, and logs
    ``fl/divergence`` (measured before the sync) and ``fl/syncs``. ``every=0`` trains without
    FedAvg (clients never meet) and warns.
    """

    def __init__(self, every: int, sync_momentum: bool = True) -> None:
        if every < 0:
            raise ValueError(f"sfl.sync_every must be >= 0, got {every}")
        self.every = every
        self.sync_momentum = sync_momentum
        self.syncs = 0
        self.schedule = PoolSchedule("round", every)  # until the data module's is known

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every == 0:
            rank_zero_warn("sfl.sync_every=0: FedAvg is off, the clients are never averaged")
        self.schedule = self.rounds_of(trainer)

    def rounds_of(self, trainer: L.Trainer) -> PoolSchedule:
        """The data module's schedule, which must end rounds every ``every`` steps as well."""
        schedule = getattr(trainer.datamodule, "pool_schedule", None)
        if schedule is None:
            return self.schedule
        if schedule.sync_every != self.every:
            raise ConfigError(
                f"callbacks.fedavg.every={self.every} but the data's rounds are "
                f"sfl.sync_every={schedule.sync_every} steps: a round would span two pools; "
                "set sfl.sync_every only"
            )
        return schedule

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.schedule.ends_round(trainer.global_step - 1):  # the step just taken
            self.sync(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every:
            self.sync(trainer, pl_module)

    def sync(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stats = pl_module.bank.fedavg(self.sync_momentum)
        if stats is None:
            return
        self.syncs += 1
        log_now(trainer, {"fl/divergence": stats["divergence"], "fl/syncs": float(self.syncs)})

    def state_dict(self) -> dict:
        return {"syncs": self.syncs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.syncs = state_dict["syncs"]
