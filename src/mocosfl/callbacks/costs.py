"""Log what the run costs each client: parameters, FLOPs, activation memory, traffic."""

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from mocosfl.costs import run_costs
from mocosfl.sfl import MocoSFL
from mocosfl.utils.logging import log_now


class CostCallback(L.Callback):
    """At the start of training, logs the ``cost/*`` metrics of :class:`mocosfl.costs.RunCosts`
    (client params, MFLOPs and activation MB per image, MB each client uploads and downloads per
    epoch and over the run; MB = 2**20 bytes). They reach every logger and ``metrics.json``.

    The client is measured on a CPU copy with a fixed input, so the run itself (its weights,
    devices and random streams) is not touched: runs with and without this callback are equal.
    The accounting is split learning's (a client part, latents across the cut), so other
    methods (FL-MoCo) are skipped with an info line rather than given numbers that are not theirs.
    """

    def __init__(self, sync_momentum: bool = True, bytes_per_element: int = 4) -> None:
        self.sync_momentum = sync_momentum
        self.bytes_per_element = bytes_per_element

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(pl_module, MocoSFL):
            rank_zero_info(
                f"callbacks.costs: no cost/* metrics for {type(pl_module).__name__}; the cost "
                "accounting is MocoSFL's (split client, latents across the cut)"
            )
            return
        datamodule = trainer.datamodule
        costs = run_costs(
            pl_module.bank.template(),
            (3, datamodule.image_size, datamodule.image_size),
            datamodule.plan,
            steps_per_epoch=datamodule.steps_per_epoch,
            total_steps=int(trainer.estimated_stepping_batches),
            loss=pl_module.loss_mode,
            sync_momentum=self.sync_momentum,
            clients_train=pl_module.bank.base_lr > 0,
            bytes_per_element=self.bytes_per_element,
        )
        # log_now, not LightningModule.log: on_train_start only takes epoch-level values, which
        # would wait for the end of the first epoch (and never come for an interrupted run).
        log_now(trainer, costs.metrics())
