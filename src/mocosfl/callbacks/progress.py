"""Training progress: a Rich bar on a terminal, a plain line every few steps anywhere else.

A batch job's log file gets only the last frame of a live bar, so when stdout is not a
terminal :class:`PlainProgress` writes one line every ``every_n_steps`` steps through the
``mocosfl`` logger (stdout and the run's ``train.log``)::

    step 120/1000  epoch 3/25  loss 3.8121  acc 41.2  val_knn 35.0  2.31 steps/s  eta 6m20s
"""

import logging
import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar

from mocosfl.utils.summary import duration

log = logging.getLogger("mocosfl")

# Short names for the bar and the lines (the full names are in history.csv and W&B).
SHOWN = {"train/loss": "loss", "train/contrastive_acc": "acc", "val/knn_top1": "val_knn"}


def shown_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {short: float(metrics[name]) for name, short in SHOWN.items() if name in metrics}


def planned_epochs(trainer: L.Trainer) -> int | None:
    """Epochs the run will train: ``max_steps`` ends it before ``max_epochs`` when it is set."""
    per_epoch = trainer.num_training_batches
    if not per_epoch or per_epoch == float("inf"):
        return trainer.max_epochs
    epochs = [e for e in (trainer.max_epochs,) if e is not None and e > 0]
    if trainer.max_steps > 0:
        epochs.append(math.ceil(trainer.max_steps / per_epoch))
    return min(epochs) if epochs else None


def planned_steps(trainer: L.Trainer) -> int | None:
    total = trainer.estimated_stepping_batches
    return None if total == float("inf") else int(total)


class StepProgressBar(RichProgressBar):
    """Lightning's Rich bar with the epoch count of the run's real budget and short metric
    names (no ``v_num``)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {k: f"{v:.3g}" for k, v in shown_metrics(trainer.progress_bar_metrics).items()}

    # Lightning's hook for the bar's label; it would show max_epochs even when max_steps ends
    # the run first.
    def _get_train_description(self, current_epoch: int) -> str:
        total = planned_epochs(self.trainer)
        return f"Epoch {current_epoch + 1}" + (f"/{total}" if total else "")


class PlainProgress(ProgressBar):
    """One log line every ``every_n_steps`` steps and at the last step."""

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"callbacks.progress.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._start: tuple[float, int] | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.monotonic(), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, total = trainer.global_step, planned_steps(trainer)
        if not self._enabled or not trainer.is_global_zero:
            return
        if step % self.every_n_steps and step != total:
            return
        log.info(self.line(trainer, step, total))

    def line(self, trainer: L.Trainer, step: int, total: int | None) -> str:
        parts = [f"step {step}" + (f"/{total}" if total else "")]
        epochs = planned_epochs(trainer)
        parts.append(f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs else ""))
        metrics = shown_metrics(trainer.callback_metrics)
        parts += [f"{k} {v:.4f}" if k == "loss" else f"{k} {v:.1f}" for k, v in metrics.items()]
        start_time, start_step = self._start or (time.monotonic(), step)
        elapsed, done = time.monotonic() - start_time, step - start_step
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.2f} steps/s")
            if total:
                parts.append(f"eta {duration((total - step) / rate)}")
        return "  ".join(parts)


def progress_bar(every_n_steps: int = 50) -> ProgressBar:
    """The Rich bar when stdout is a terminal, :class:`PlainProgress` otherwise."""
    if sys.stdout.isatty():
        return StepProgressBar()
    return PlainProgress(every_n_steps)
