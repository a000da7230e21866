"""Features of the model being trained, extracted once per step and shared by the callbacks.

The kNN monitor and the linear probe both need the training images' features; when they run in
the same epoch they read them from here instead of passing the data through the network twice.
"""

from weakref import WeakKeyDictionary

import lightning as L
from torch import nn

from mocosfl.evaluation.features import Split, extract_features


class FeatureCache:
    """Features keyed by (global_step, feature kind, split); only the latest step is kept.

    Keying on the step is exact: weights change only in a training step, and the encoder is the
    averaged client model (what FedAvg would load now), so the final FedAvg at the end of
    training, which takes no step, does not change the network the encoder shows.
    """

    def __init__(self) -> None:
        self.step: int | None = None
        self.encoders: dict[str, nn.Module] = {}
        self.features: dict[tuple[str, str], Split] = {}

    def get(
        self, trainer: L.Trainer, pl_module: L.LightningModule, feature: str, split: str
    ) -> Split:
        if trainer.global_step != self.step:
            self.step, self.encoders, self.features = trainer.global_step, {}, {}
        if (feature, split) not in self.features:
            if feature not in self.encoders:
                self.encoders[feature] = pl_module.encoder(feature)
            loader = trainer.datamodule.eval_dataloader(split)
            self.features[feature, split] = extract_features(
                self.encoders[feature], loader, pl_module.device
            )
        return self.features[feature, split]


# One cache per fit: a Trainer that is garbage-collected takes its features with it.
_CACHES: "WeakKeyDictionary[L.Trainer, FeatureCache]" = WeakKeyDictionary()


def split_features(
    trainer: L.Trainer, pl_module: L.LightningModule, feature: str, split: str
) -> Split:
    """Features [N, D] and labels [N] of ``split`` ("train", "val", "test") under the current
    model, ``feature`` being "backbone" or "head" (see ``MocoSFL.encoder``)."""
    cache = _CACHES.setdefault(trainer, FeatureCache())
    return cache.get(trainer, pl_module, feature, split)
