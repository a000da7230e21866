"""Model-inversion attack on the current FedAvg client model, during and after training."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger, WandbLogger

from mocosfl.errors import require_split_model
from mocosfl.privacy.attack import AttackResult, AttackSettings, run_attack, select_attack_images
from mocosfl.privacy.protocol import DEFAULT_PROTOCOL, get_protocol
from mocosfl.utils.logging import log_now


def log_reconstructions(
    loggers: Sequence[Logger], grid: Path, step: int, prefix: str = "attack"
) -> None:
    """The saved ``reconstructions.png`` to every W&B logger as ``<prefix>/reconstructions``
    (``prefix``: the protocol's, :attr:`AttackResult.prefix`): the same picture as the file (the
    other loggers take no images)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(
                f"{prefix}/reconstructions",
                [str(grid)],
                step=step,
                caption=["originals over their reconstructions"],
            )


class AttackCallback(L.Callback):
    """Runs :func:`mocosfl.privacy.run_attack` every ``every_n_epochs`` epochs (0: never) and at
    the end of training, logs ``attack/mse``, ``attack/ssim``, ``attack/psnr`` (``protocol``:
    ``corrected``; ``paper``, the original's, logs ``attack_paper/*``:
    :mod:`mocosfl.privacy.protocol`), writes ``reconstructions.png`` and ``attack.json`` into
    ``out_dir`` (None: the trainer's ``default_root_dir``, the run directory; the latest
    attack's) and, with a W&B logger, logs the same grid as ``attack/reconstructions``
    (``attack_paper/reconstructions``).

    At the end it must run after the final FedAvg, so it comes after ``fedavg`` in the callbacks
    dict (``callbacks=attack`` appends it). The images are those of ``python -m mocosfl.attack``
    with the same settings and seed (:func:`select_attack_images`), so both give the same numbers.
    """

    def __init__(
        self,
        every_n_epochs: int = 0,
        at_end: bool = True,
        aux_fraction: float = 0.01,
        num_targets: int = 128,
        aux_classes: Sequence[int] | None = None,
        aux_data: Mapping[str, Any] | None = None,
        seed: int = 0,
        decoder: Mapping[str, Any] | None = None,
        grid_images: int | None = None,
        progress: bool = True,
        out_dir: str | Path | None = None,
        protocol: str = DEFAULT_PROTOCOL,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.at_end = at_end
        self.aux_fraction = aux_fraction
        self.num_targets = num_targets
        self.aux_classes = list(aux_classes) if aux_classes is not None else None
        self.aux_data = dict(aux_data) if aux_data else None
        self.settings = AttackSettings.from_config(
            {**(decoder or {}), "seed": seed, "protocol": protocol}
        )
        self.grid_images = grid_images
        self.progress = progress
        self.out_dir = out_dir

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        require_split_model(pl_module, "callbacks.attack")  # before any step is spent

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> AttackResult:
        datamodule = trainer.datamodule
        aux, targets = select_attack_images(
            datamodule,
            self.aux_fraction,
            self.num_targets,
            self.settings.seed,
            self.aux_classes,
            self.aux_data,
            get_protocol(self.settings.protocol).aux_pool,
        )
        client = pl_module.bank.averaged_client()
        stats = (datamodule.mean, datamodule.std)
        progress = self.progress and trainer.is_global_zero
        return run_attack(client, aux, targets, *stats, self.settings, pl_module.device, progress)

    def attack_and_log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = self.run(trainer, pl_module)
        log_now(trainer, result.metrics())
        if not trainer.is_global_zero:
            return
        grid, _ = result.save(self.out_dir or trainer.default_root_dir, self.grid_images)
        log_reconstructions(trainer.loggers, grid, trainer.global_step, result.prefix)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.attack_and_log(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end:
            self.attack_and_log(trainer, pl_module)
