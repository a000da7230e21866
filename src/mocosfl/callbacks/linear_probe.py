"""Online linear probe: validation every few epochs, test once at the end."""

from collections.abc import Mapping
from typing import Any

import lightning as L

from mocosfl.callbacks.feature_cache import split_features
from mocosfl.evaluation import ProbeResult, ProbeSettings, train_probe
from mocosfl.utils.logging import log_now

FEATURE = "backbone"  # the paper's probe reads the pooled backbone feature, not the head


class LinearProbeCallback(L.Callback):
    """A classifier on the frozen backbone features of the current FedAvg model.

    The training images' features (no augmentation) are extracted once per evaluation, shared
    with the kNN monitor, and the probe trains on them alone, so it costs seconds, not passes
    through the network. Every ``every_n_epochs`` epochs it logs ``val/linear_top1``; at the end
    of training ``val/linear_top1`` and ``test/linear_top1`` (the test split at the epoch the
    validation split chose). ``probe`` holds :class:`ProbeSettings` (cheap ones here); the
    standalone evaluation with the same settings and seed gives the same numbers.
    """

    def __init__(
        self,
        every_n_epochs: int = 10,
        seed: int = 0,
        test_at_end: bool = True,
        probe: Mapping[str, Any] | None = None,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.test_at_end = test_at_end
        self.settings = ProbeSettings.from_config(dict(probe or {}))

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule, test: bool) -> ProbeResult:
        def features(split: str):
            return split_features(trainer, pl_module, FEATURE, split)

        return train_probe(
            features("train"),
            features("val"),
            trainer.datamodule.num_classes,
            self.settings,
            self.seed,
            test=features("test") if test else None,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            log_now(trainer, {"val/linear_top1": self.run(trainer, pl_module, test=False).val_top1})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.test_at_end:
            result = self.run(trainer, pl_module, test=True)
            log_now(
                trainer, {"val/linear_top1": result.val_top1, "test/linear_top1": result.test_top1}
            )
