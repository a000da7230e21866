"""Online kNN monitor: validation every few epochs or steps, test once at the end."""

import lightning as L

from mocosfl.callbacks.feature_cache import split_features
from mocosfl.evaluation import accuracy, knn_predict
from mocosfl.utils.logging import log_now


class KNNMonitor(L.Callback):
    """Weighted kNN top-1 (k=200, T=0.1) of the current FedAvg model.

    The bank is the training images without augmentation (``data.eval_train_images`` of them
    when set); queries are the validation split every ``every_n_epochs`` epochs and every
    ``every_n_steps`` training steps (``val/knn_top1``; 0 turns either off) and the test split
    at the end of training (``test/knn_top1``), so the test split never selects anything. The
    step interval is for budgets shorter than an epoch: a learning curve of a few points.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        k: int = 200,
        temperature: float = 0.1,
        feature: str = "backbone",
        test_at_end: bool = True,
        every_n_steps: int = 0,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.k = k
        self.temperature = temperature
        self.feature = feature
        self.test_at_end = test_at_end

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> float:
        num_classes = trainer.datamodule.num_classes
        # Shared with the linear probe: the features are extracted once per step.
        bank, bank_labels = split_features(trainer, pl_module, self.feature, "train")
        queries, labels = split_features(trainer, pl_module, self.feature, split)
        scores = knn_predict(queries, bank, bank_labels, num_classes, self.k, self.temperature)
        return accuracy(scores, labels, num_classes)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            log_now(trainer, {"val/knn_top1": self.evaluate(trainer, pl_module, "val")})

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_) -> None:
        # global_step counts optimizer steps, so a resumed run evaluates at the same steps.
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            log_now(trainer, {"val/knn_top1": self.evaluate(trainer, pl_module, "val")})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.test_at_end:
            log_now(trainer, {"test/knn_top1": self.evaluate(trainer, pl_module, "test")})
