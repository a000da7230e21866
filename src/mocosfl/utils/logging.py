"""Logging from anywhere in the fit, including hooks where ``LightningModule.log`` is refused."""

import lightning as L
import torch


def log_now(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Send ``metrics`` to every logger at the current step and keep them in
    ``trainer.callback_metrics`` (where ``metrics.json`` and sweepers read final values)."""
    for name, value in metrics.items():
        trainer.callback_metrics[name] = torch.tensor(float(value))
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
