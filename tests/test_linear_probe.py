"""The probe function, its label subsets, the shared feature cache and the online callback."""

import dataclasses
from pathlib import Path

import pytest
import torch

from mocosfl.callbacks import LinearProbeCallback
from mocosfl.callbacks.feature_cache import split_features
from mocosfl.errors import ConfigError
from mocosfl.evaluation import ProbeSettings, balanced_subset, train_probe
from mocosfl.train import train

from helpers import TINY

CHEAP = ProbeSettings(
    epochs=10, lr=1e-2, batch_size=256, standardize=True
)  # the callback's defaults
NUM_CLASSES = 10


def clusters(
    n: int, seed: int, spread: float = 1.0, dim: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [n, dim] around 10 well separated class means (one fixed set of means)."""
    means = 4.0 * torch.randn(NUM_CLASSES, dim, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return means[labels] + spread * torch.randn(n, dim, generator=g), labels


def noise(n: int, seed: int, dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


@pytest.mark.parametrize(
    "settings",
    [CHEAP, ProbeSettings(), ProbeSettings(head="mlp", schedule="multistep", epochs=10)],
    ids=["callback", "paper-linear", "paper-mlp"],
)
def test_separable_features_are_classified(settings):
    result = train_probe(
        clusters(4000, 1), clusters(500, 2), NUM_CLASSES, settings, seed=0, test=clusters(1000, 3)
    )
    assert result.val_top1 >= 99.0 and result.test_top1 >= 99.0
    assert len(result.val_curve) == len(result.train_loss) == settings.epochs
    assert len(result.test_per_class) == NUM_CLASSES and min(result.test_per_class) >= 95.0
    confusion = torch.tensor(result.test_confusion)
    assert confusion.shape == (NUM_CLASSES, NUM_CLASSES) and confusion.sum() == 1000
    assert confusion.trace() >= 990


def test_random_labels_stay_at_chance():
    result = train_probe(
        noise(2000, 1), noise(1000, 2), NUM_CLASSES, CHEAP, seed=0, test=noise(4000, 3)
    )
    assert abs(result.test_top1 - 10.0) < 3.0  # 4000 test labels: 1 std is 0.5 points
    assert result.val_top1 < 16.0  # the best of 10 epochs on 1000 val labels


def test_seeded_and_leaves_the_global_rng_alone():
    data = clusters(600, 1, spread=6.0), clusters(300, 2, spread=6.0), clusters(300, 3, spread=6.0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train_probe(data[0], data[1], NUM_CLASSES, CHEAP, seed=5, test=data[2])
    assert torch.equal(torch.get_rng_state(), before)
    b = train_probe(data[0], data[1], NUM_CLASSES, CHEAP, seed=5, test=data[2])
    c = train_probe(data[0], data[1], NUM_CLASSES, CHEAP, seed=6, test=data[2])
    assert a == b
    assert a.train_loss != c.train_loss


def test_the_epoch_is_chosen_on_val_and_test_is_that_epochs():
    """With a constant rate the first e epochs of a run are a run of e epochs, so rerunning up
    to the chosen epoch must reproduce the reported test accuracy (not the best test one)."""
    hard = clusters(800, 1, spread=8.0), clusters(400, 2, spread=8.0), clusters(400, 3, spread=8.0)
    settings = ProbeSettings(epochs=12, batch_size=64, lr=3e-3, schedule="constant")
    full = train_probe(*hard[:2], NUM_CLASSES, settings, seed=0, test=hard[2])
    assert full.val_top1 == max(full.val_curve)
    assert full.epoch == full.val_curve.index(full.val_top1) + 1
    upto = train_probe(
        *hard[:2],
        NUM_CLASSES,
        dataclasses.replace(settings, epochs=full.epoch),
        seed=0,
        test=hard[2],
    )
    assert upto.val_curve == full.val_curve[: full.epoch]
    assert upto.test_top1 == full.test_top1 and upto.test_confusion == full.test_confusion


def test_balanced_subset_is_seeded_and_keeps_every_class():
    labels = torch.arange(1000) % 10
    labels[:300] = 0  # class 0 is over-represented: 300 + 70 images
    subset = balanced_subset(labels, 0.1, seed=3)
    counts = torch.bincount(labels[subset], minlength=10)
    assert counts[0] == 37 and (counts[1:] == 7).all()
    assert torch.equal(subset, balanced_subset(labels, 0.1, seed=3))
    assert not torch.equal(subset, balanced_subset(labels, 0.1, seed=4))
    assert (subset.diff() > 0).all()
    assert torch.equal(
        torch.bincount(labels[balanced_subset(labels, 0.001, 0)]), torch.ones(10).long()
    )


def test_semi_supervised_probe_uses_the_subset():
    semi10 = ProbeSettings(head="mlp", schedule="multistep", label_fraction=0.1)  # the paper's
    result = train_probe(
        clusters(4000, 1), clusters(500, 2), NUM_CLASSES, semi10, seed=0, test=clusters(500, 3)
    )
    assert result.num_labelled == pytest.approx(400, abs=10)
    assert result.test_top1 >= 99.0


@pytest.mark.parametrize(
    "values, message",
    [
        ({"head": "resnet"}, "probe.head='resnet'"),
        ({"label_fraction": 0.0}, "label_fraction=0.0"),
        ({"schedule": "step"}, "probe.schedule='step'"),
        ({"epochs": 0}, "probe.epochs=0"),
        ({"depth": 3}, "unknown probe setting(s) depth"),
    ],
)
def test_bad_settings_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ProbeSettings.from_config(values)
    with pytest.raises(ConfigError):
        LinearProbeCallback(probe=values)


class FakeTrainer:
    """What the cache reads of a Trainer: the step and the data module."""

    def __init__(self) -> None:
        self.global_step = 0
        self.datamodule = self
        self.loads: list[str] = []

    def eval_dataloader(self, split: str):
        self.loads.append(split)
        return [(torch.ones(4, 3), torch.zeros(4, dtype=torch.long))]


class FakeModule:
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.scale = 1.0

    def encoder(self, feature: str) -> torch.nn.Module:
        layer = torch.nn.Linear(3, 2 if feature == "backbone" else 5)
        torch.nn.init.constant_(layer.weight, self.scale)
        return layer


def test_feature_cache_extracts_once_per_step_and_trainer():
    trainer, module = FakeTrainer(), FakeModule()
    first = split_features(trainer, module, "backbone", "train")
    assert split_features(trainer, module, "backbone", "train") is first
    assert split_features(trainer, module, "head", "train")[0].shape == (4, 5)
    assert trainer.loads == ["train", "train"]
    trainer.global_step, module.scale = 1, 2.0  # a step changed the weights
    assert not torch.equal(split_features(trainer, module, "backbone", "train")[0], first[0])
    other = FakeTrainer()
    split_features(other, module, "backbone", "train")
    assert other.loads == ["train"]


def final_weights(cfg) -> dict[str, torch.Tensor]:
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"  # every client's weights
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_callback_does_not_change_the_training_run(compose_train, tmp_path):
    common = [*TINY, "~callbacks.knn", "trainer.max_epochs=2"]
    with_probe = compose_train([*common, "callbacks.linear_probe.every_n_epochs=1"])
    probed = final_weights(with_probe)
    without = compose_train([*common, "~callbacks.linear_probe"])
    without.paths.output_dir = str(tmp_path / "without")
    plain = final_weights(without)
    assert probed.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(probed[name], plain[name], rtol=0, atol=0, msg=name)
