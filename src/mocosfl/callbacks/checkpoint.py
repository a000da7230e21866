"""The run's checkpoints: ``last.ckpt`` for resuming, a few kept ones, and a clean stop on
Ctrl-C or SIGTERM.

* ``last.ckpt`` (the full state) is rewritten every ``every_n_train_steps`` steps and at the
  last training step, so a crash loses at most one interval;
* ``step_NNNNNNN.ckpt`` is kept every ``keep_every_n_steps`` steps (0: none), so a long run
  leaves a handful of full-state files, not one an interval;
* on SIGINT or SIGTERM the current step is finished, ``last.ckpt`` is written for it and the
  run stops with :class:`RunInterrupted` (under DDP at the next step that is a multiple of
  ``DDP_STOP_CHECK_EVERY``); a second signal stops at once, without a checkpoint.

Being a :class:`~lightning.pytorch.callbacks.Checkpoint`, Lightning runs it after every other
callback of a step, so the checkpoint of a step includes that step's FedAvg.
"""

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """Training stopped on a signal after writing ``last.ckpt`` for ``step``."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint


DDP_STOP_CHECK_EVERY = 10  # steps between two stop agreements of the DDP processes


class RunCheckpoint(Checkpoint):
    """Writes ``dirpath/last.ckpt`` and ``dirpath/step_NNNNNNN.ckpt`` (see the module doc)."""

    def __init__(
        self, dirpath: str | Path, every_n_train_steps: int = 500, keep_every_n_steps: int = 10_000
    ) -> None:
        if every_n_train_steps < 1 or keep_every_n_steps < 0:
            raise ValueError(
                "callbacks.checkpoint.every_n_train_steps must be >= 1 and keep_every_n_steps "
                f">= 0 (got {every_n_train_steps}, {keep_every_n_steps})"
            )
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.keep_every_n_steps = keep_every_n_steps
        self._signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    # -- signals ----------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is not None:  # the user insists: stop now
            self._restore_handlers()
            raise KeyboardInterrupt
        self._signal = signum
        # os.write: print() is not safe inside a signal handler.
        os.write(
            sys.stderr.fileno(),
            f"\n{signal.Signals(signum).name}: finishing this step and writing last.ckpt "
            "(send it again to stop at once, without a checkpoint)\n".encode(),
        )

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._signal = None
        self._install_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        # Every process must stop at the same step, even when only one got the signal; they
        # agree every DDP_STOP_CHECK_EVERY steps, as each agreement waits for the device.
        if trainer.world_size == 1:
            return self._signal is not None
        if trainer.global_step % DDP_STOP_CHECK_EVERY and not is_final_step(trainer):
            return False
        return bool(trainer.strategy.reduce_boolean_decision(self._signal is not None, all=False))

    # -- writing ----------------------------------------------------------------------------
    def save(self, trainer: L.Trainer, path: Path) -> None:
        """The full state into ``path``, written beside it first so that a crash while writing
        never leaves a broken file under the final name."""
        partial = path.with_name(path.name + ".partial")
        trainer.save_checkpoint(partial, weights_only=False)  # the full state, optimizers too
        if trainer.is_global_zero:
            os.replace(partial, path)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        stop = self._stop_requested(trainer)
        if stop or step % self.every_n_train_steps == 0 or is_final_step(trainer):
            self.save(trainer, self.last_path)
        if self.keep_every_n_steps and step % self.keep_every_n_steps == 0:
            self.save(trainer, self.dirpath / f"step_{step:07d}.ckpt")
        if stop:
            raise RunInterrupted(self._signal or signal.SIGTERM, step, self.last_path)


def is_final_step(trainer: L.Trainer) -> bool:
    """True at the step that ends training (by ``max_steps`` or by the last epoch)."""
    if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
    return bool(trainer.is_last_batch and last_epoch)
