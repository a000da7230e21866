"""FedAvg at the end of every round and at the end of training."""

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from mocosfl.utils.logging import log_now


class FedAvgCallback(L.Callback):
    """Ends every round of ``every`` server steps with FedAvg of the round's pool.

    The averaging itself (weights, momentum copies) belongs to the module's client bank; this
    callback only decides when, and logs ``fl/divergence`` (measured before the sync) and
    ``fl/syncs``. ``every=0`` trains without FedAvg (clients never meet) and warns.
    """

    def __init__(self, every: int, sync_momentum: bool = True) -> None:
        if every < 0:
            raise ValueError(f"sfl.sync_every must be >= 0, got {every}")
        self.every = every
        self.sync_momentum = sync_momentum
        self.syncs = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every == 0:
            rank_zero_warn("sfl.sync_every=0: FedAvg is off, the clients are never averaged")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0:
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
