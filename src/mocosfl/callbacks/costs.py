"""Log what the run costs each client: parameters, FLOPs, activation memory, traffic."""

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from mocosfl.costs import FLSSLModule, flssl_run_costs, run_costs
from mocosfl.sfl import MocoSFL
from mocosfl.utils.logging import log_now


class CostCallback(L.Callback):
    """At the start of training, logs the ``cost/*`` metrics of :class:`mocosfl.costs.RunCosts`
    (client params, MFLOPs and activation MB per image, MB each client uploads and downloads per
    epoch and over the run; MB = 2**20 bytes). They reach every logger and ``metrics.json``.

    The client is measured on a CPU copy with a fixed input, so the run itself (its weights,
    devices and random streams) is not touched: runs with and without this callback are equal.
    MocoSFL's accounting is split learning's (a client part, latents across the cut); an FL-SSL
    method (:class:`mocosfl.costs.FLSSLModule`, e.g. FL-MoCo) gets the same metrics for the
    whole network its clients train (``cost/latent_numel`` and the latent traffic 0) and
    ``cost/client_activation_mb_per_batch``. Other methods are skipped with an info line.
    """

    def __init__(self, sync_momentum: bool = True, bytes_per_element: int = 4) -> None:
        self.sync_momentum = sync_momentum
        self.bytes_per_element = bytes_per_element

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if isinstance(pl_module, FLSSLModule):
            costs = flssl_run_costs(
                pl_module.cost_models(self.sync_momentum),
                (3, datamodule.image_size, datamodule.image_size),
                datamodule.plan,
                steps_per_epoch=datamodule.steps_per_epoch,
                total_steps=int(trainer.estimated_stepping_batches),
                bytes_per_element=self.bytes_per_element,
            )
            log_now(trainer, costs.metrics())
            return
        if not isinstance(pl_module, MocoSFL):
            rank_zero_info(
                f"callbacks.costs: no cost/* metrics for {type(pl_module).__name__}; the cost "
                "accounting is MocoSFL's (split client, latents across the cut) or an FL-SSL "
                "method's (mocosfl.costs.FLSSLModule)"
            )
            return
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
