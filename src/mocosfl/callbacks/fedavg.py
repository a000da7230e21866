"""FedAvg at the end of every round and at the end of training."""

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from mocosfl.errors import ConfigError
from mocosfl.sfl.plan import FederatedPlan
from mocosfl.utils.logging import log_now


class FedAvgCallback(L.Callback):
    """Ends every round with FedAvg of the clients that trained in it: the round's pool.

    Rounds are those of the run's :class:`~mocosfl.sfl.plan.FederatedPlan` (``plan``, else the
    data module's ``plan`` at the start of training), so that a round never spans two pools.

    The averaging itself (weights, momentum copies) belongs to the module's client bank, which
    knows who trained since the last FedAvg; this callback only decides when, and logs
    ``fl/divergence`` (measured before the sync) and ``fl/syncs``. A plan with ``sync_every=0``
    trains without FedAvg (clients never meet) and warns.
    """

    def __init__(self, sync_momentum: bool = True, plan: FederatedPlan | None = None) -> None:
        self.sync_momentum = sync_momentum
        self.plan = plan
        self.syncs = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        plan = getattr(trainer.datamodule, "plan", None)
        self.plan = plan if plan is not None else self.plan
        if self.plan is None:
            raise ConfigError(
                "FedAvgCallback needs the run's FederatedPlan: train with a data module that "
                "has one (FederatedDataModule) or pass plan="
            )
        if self.plan.sync_every == 0:
            rank_zero_warn(
                "sfl.sync_every=0: FedAvg is off, the clients are never averaged and a new pool "
                "is drawn every step (every code epoch with sfl.pool=epoch)"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.plan.ends_round(trainer.global_step - 1):  # the step just taken
            self.sync(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.plan.sync_every:
            self.sync(trainer, pl_module)

    def sync(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stats = pl_module.bank.fedavg(self.sync_momentum)
        if stats is None:
            return
        self.syncs += 1
        metrics = {"fl/divergence": stats["divergence"], "fl/syncs": float(self.syncs)}
        log_now(trainer, {**metrics, **pl_module.bank.run_stats()})  # with the models' traffic

    def state_dict(self) -> dict:
        return {"syncs": self.syncs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.syncs = state_dict["syncs"]
