"""The type and range of every numeric, boolean and choice setting of the training config: the
:data:`RULES` table, one line a key, and the settings that copy another one (:data:`ALL_RULES`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from mocosfl.data.datasets import DATASET_NAMES
from mocosfl.data.image_set import STATS_CHOICES
from mocosfl.data.partition import PARTITION_KINDS
from mocosfl.data.transforms import BLUR_KINDS
from mocosfl.errors import ConfigError
from mocosfl.evaluation.linear import HEADS, SCHEDULES
from mocosfl.models.layers import INITS, NORMS, STEMS
from mocosfl.models.split import ARCHITECTURES, parse_bottleneck
from mocosfl.sfl.engines import CLIENT_ENGINES
from mocosfl.sfl.loss import LOSS_MODES
from mocosfl.sfl.plan import POOL_MODES
from mocosfl.sfl.schedules import LRSchedule

__all__ = ["ALL_RULES", "RULES", "Bound", "Kind"]

_MAX_SEED = 2**32 - 1  # numpy's SeedSequence and Lightning's seed_everything take uint32 seeds


@dataclass(frozen=True)
class Kind:
    """A value's type: ``name`` as the message says it, ``test`` whether a value has it."""

    name: str
    test: Callable[[Any], bool]
    nullable: bool = False

    def or_null(self) -> Kind:
        return replace(self, name=f"{self.name} or null", nullable=True)

    def accepts(self, value: Any) -> bool:
        return (value is None and self.nullable) or (value is not None and self.test(value))


@dataclass(frozen=True)
class Bound:
    """A range or choice a value of the right type must be in; ``text`` completes "must be"."""

    test: Callable[[Any], bool]
    text: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's true is not a count


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


INT = Kind("an integer", _is_int)
NUMBER = Kind("a number", _is_number)
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
STR = Kind("a string", lambda v: isinstance(v, str))
ANY = Bound(lambda v: True, "anything")


def ge(low: float) -> Bound:
    return Bound(lambda v: v >= low, f">= {low}")


def gt(low: float) -> Bound:
    return Bound(lambda v: v > low, f"> {low}")


def within(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Bound:
    """``low <= v <= high``, either end open; text in interval notation, e.g. ``in [0, 1)``."""

    def test(v: Any) -> bool:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    return Bound(test, f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")


def one_of(*choices: str) -> Bound:
    return Bound(lambda v: v in choices, f"one of {', '.join(choices)}")


def _bottleneck_ok(spec: str) -> bool:
    try:
        parse_bottleneck(spec)
    except ConfigError:
        return False
    return True


UNBOUNDED_OR_POSITIVE = Bound(lambda v: v == -1 or v >= 1, "-1 (no limit) or >= 1")
BOTTLENECK = Bound(_bottleneck_ok, "C<channels>S<stride> with a power-of-2 stride, e.g. C4S2")
STEP_SCHEDULES = one_of(*LRSchedule.KINDS)
FEATURES = one_of("backbone", "head")

# (key, kind, bound, what it is). A key absent from the config is skipped (presets, experiments
# and callbacks that are not there); null passes only for kinds made with .or_null().
RULES: list[tuple[str, Kind, Bound, str]] = [
    ("seed", INT, within(0, _MAX_SEED), "seeds the data split, the pools and the weights"),
    ("num_threads", INT.or_null(), ge(1), "torch CPU threads"),
    ("expert_target_fraction", NUMBER.or_null(), within(0, 1), "stage-1 share of target data"),
    ("bytes_per_element", INT, ge(1), "bytes of one transmitted number"),
    # sfl: the split-federated algorithm
    ("sfl.cut_layer", INT, ge(1), "client layers; the model gives the upper bound"),
    ("sfl.num_clients", INT, ge(1), "clients"),
    ("sfl.clients_per_step", INT, ge(1), "clients in a round's pool"),
    ("sfl.client_batch_size", INT, ge(1), "images per client and step"),
    ("sfl.sync_every", INT, ge(0), "steps between FedAvg events, 0 = never"),
    ("sfl.pool", STR, one_of(*POOL_MODES), "when the pool is redrawn"),
    ("sfl.code_epoch_steps", INT.or_null(), ge(1), "steps of a code epoch"),
    ("sfl.variant", STR, one_of("fixed", "legacy"), "how mocosfl.table reports the run"),
    ("sfl.fedavg_weights", STR, one_of("data", "uniform"), "FedAvg weights"),
    ("sfl.sync_momentum", BOOL, ANY, "FedAvg of the momentum copies"),
    ("sfl.queue_size", INT, ge(1), "negative keys in the queue"),
    ("sfl.temperature", NUMBER, gt(0), "InfoNCE temperature: the logits are divided by it"),
    ("sfl.ema_decay", NUMBER, within(0, 1, high_open=True), "momentum-encoder decay"),
    ("sfl.loss", STR, one_of(*LOSS_MODES), "how a step feeds InfoNCE its two views"),
    ("sfl.lr", NUMBER, ge(0), "server learning rate"),
    ("sfl.client_lr", NUMBER, ge(0), "client learning rate"),
    ("sfl.server_schedule", STR, STEP_SCHEDULES, "server learning-rate schedule"),
    ("sfl.client_schedule", STR, STEP_SCHEDULES, "client learning-rate schedule"),
    (
        "sfl.legacy_client_period",
        INT.or_null(),
        ge(1),
        "period of the legacy client cosine (null: derived)",
    ),
    ("sfl.client_engine", STR, one_of(*CLIENT_ENGINES), "client engine"),
    ("sfl.server_optimizer.lr", NUMBER, ge(0), "server learning rate"),
    ("sfl.server_optimizer.momentum", NUMBER, within(0, 1, high_open=True), "SGD momentum"),
    ("sfl.server_optimizer.weight_decay", NUMBER, ge(0), "weight decay"),
    ("sfl.client_optimizer.lr", NUMBER, ge(0), "client learning rate"),
    ("sfl.client_optimizer.momentum", NUMBER, within(0, 1, high_open=True), "SGD momentum"),
    ("sfl.client_optimizer.weight_decay", NUMBER, ge(0), "weight decay"),
    # data
    ("data.name", STR, one_of(*DATASET_NAMES), "data set (data=<name>)"),
    ("data.root", STR.or_null(), ANY, "the data set's folder (null: only for synthetic data)"),
    ("data.download", BOOL, ANY, "torchvision download"),
    ("data.image_size", INT, ge(8), "image side in pixels"),
    ("data.max_train_images", INT.or_null(), ge(1), "training subset"),
    ("data.val_images", INT, ge(0), "held-out validation images"),
    ("data.partition", STR, one_of(*PARTITION_KINDS), "how clients split the data"),
    ("data.classes_per_client", INT, ge(1), "shards (classes) per client"),
    ("data.dirichlet_alpha", NUMBER, gt(0), "Dirichlet concentration"),
    ("data.num_workers", INT, ge(0), "DataLoader workers"),
    ("data.blur", STR, one_of(*BLUR_KINDS), "blur strength (pil: the original's)"),
    ("data.stats", STR, one_of(*STATS_CHOICES), "normalisation statistics"),
    ("data.eval_batch_size", INT, ge(1), "evaluation batch"),
    ("data.eval_train_images", INT.or_null(), ge(1), "training images evaluation reads"),
    ("data.synthetic.num_classes", INT, ge(2), "synthetic classes"),
    ("data.synthetic.train_size", INT, ge(1), "synthetic training images"),
    ("data.synthetic.test_size", INT, ge(1), "synthetic test images"),
    ("data.synthetic.seed", INT, within(0, _MAX_SEED), "synthetic data seed"),
    ("data.target_fraction", NUMBER, within(0, 1), "the expert's share of the target data"),
    ("data.aux.batch_size", INT.or_null(), ge(1), "auxiliary images a step"),
    ("data.aux.download", BOOL, ANY, "auxiliary download"),
    # model
    ("model.arch", STR, one_of(*ARCHITECTURES), "backbone"),
    ("model.width", INT, ge(1), "base channels"),
    ("model.norm", STR, one_of(*NORMS), "normalisation"),
    ("model.weight_std", BOOL, ANY, "weight standardisation"),
    ("model.bottleneck", STR.or_null(), BOTTLENECK, "latent bottleneck"),
    ("model.init", STR, one_of(*INITS), "weight initialisation rule"),
    ("model.stem", STR, one_of(*STEMS), "stem rule (auto: by image size; legacy: the original's)"),
    # module
    ("module.head_hidden_dim", INT, ge(1), "projection head width"),
    ("module.head_out_dim", INT, ge(1), "projection head output"),
    ("module.alpha", NUMBER, ge(0), "TAResSFL hinge weight"),
    ("module.target_ssim", NUMBER, within(-1, 1), "TAResSFL target SSIM"),
    ("module.simulator_width", INT, ge(1), "simulated attacker's width"),
    ("module.simulator_blocks", INT, ge(0), "simulated attacker's blocks"),
    ("module.simulator_lr", NUMBER, ge(0), "simulated attacker's learning rate"),
    ("module.simulator_gamma", NUMBER, gt(0), "simulated attacker's lr decay"),
    # trainer
    ("trainer.max_steps", INT, UNBOUNDED_OR_POSITIVE, "step budget"),
    ("trainer.max_epochs", INT.or_null(), UNBOUNDED_OR_POSITIVE, "epoch budget"),
    ("trainer.num_nodes", INT, ge(1), "machines"),
    ("trainer.log_every_n_steps", INT, ge(1), "logging interval"),
    # callbacks
    ("callbacks.knn.every_n_epochs", INT, ge(0), "kNN interval, 0 = only at the end"),
    ("callbacks.knn.every_n_steps", INT, ge(0), "kNN interval in steps, 0 = off"),
    ("callbacks.knn.k", INT, ge(1), "kNN neighbours"),
    ("callbacks.knn.temperature", NUMBER, gt(0), "kNN temperature"),
    ("callbacks.knn.test_at_end", BOOL, ANY, "kNN test at the end"),
    ("callbacks.knn.feature", STR, FEATURES, "kNN feature: backbone, or head (the original)"),
    ("callbacks.linear_probe.every_n_epochs", INT, ge(0), "probe interval, 0 = only at the end"),
    ("callbacks.linear_probe.test_at_end", BOOL, ANY, "probe test at the end"),
    ("callbacks.linear_probe.probe.head", STR, one_of(*HEADS), "probe head"),
    ("callbacks.linear_probe.probe.epochs", INT, ge(1), "probe epochs"),
    ("callbacks.linear_probe.probe.lr", NUMBER, gt(0), "probe learning rate"),
    ("callbacks.linear_probe.probe.batch_size", INT, ge(2), "probe batch"),
    ("callbacks.linear_probe.probe.weight_decay", NUMBER, ge(0), "probe weight decay"),
    ("callbacks.linear_probe.probe.schedule", STR, one_of(*SCHEDULES), "probe schedule"),
    ("callbacks.linear_probe.probe.standardize", BOOL, ANY, "probe standardisation"),
    (
        "callbacks.linear_probe.probe.label_fraction",
        NUMBER,
        within(0, 1, low_open=True),
        "share of labels",
    ),
    ("callbacks.costs.bytes_per_element", INT, ge(1), "bytes of one transmitted number"),
    ("callbacks.checkpoint.every_n_train_steps", INT, ge(1), "steps between checkpoints"),
    ("callbacks.checkpoint.save_top_k", INT, ge(-1), "checkpoints kept, -1 = all"),
    ("callbacks.checkpoint.save_last", BOOL, ANY, "last.ckpt"),
    ("callbacks.attack.every_n_epochs", INT, ge(0), "attack interval, 0 = only at the end"),
    ("callbacks.attack.at_end", BOOL, ANY, "attack at the end"),
    ("callbacks.attack.aux_fraction", NUMBER, within(0, 1, low_open=True), "attacker's share"),
    ("callbacks.attack.num_targets", INT, ge(1), "reconstructed test images"),
    ("callbacks.attack.seed", INT, within(0, _MAX_SEED), "attack seed"),
    ("callbacks.attack.grid_images", INT.or_null(), ge(1), "pairs in the grid"),
    ("callbacks.attack.logged_images", INT, ge(0), "pairs in the grid"),
    ("callbacks.attack.progress", BOOL, ANY, "decoder progress"),
    ("callbacks.attack.decoder.epochs", INT, ge(1), "decoder epochs"),
    ("callbacks.attack.decoder.steps", INT.or_null(), ge(1), "decoder steps"),
    ("callbacks.attack.decoder.batch_size", INT, ge(1), "decoder batch"),
    ("callbacks.attack.decoder.lr", NUMBER, gt(0), "decoder learning rate"),
    ("callbacks.attack.decoder.width", INT, ge(1), "decoder width"),
    ("callbacks.attack.decoder.num_blocks", INT, ge(0), "decoder blocks"),
    (
        "callbacks.attack.decoder.val_fraction",
        NUMBER,
        within(0, 1, low_open=True, high_open=True),
        "decoder validation share",
    ),
]

# Settings that are copies of others by default (conf/data/*.yaml, the module and the callbacks
# interpolate them): checked with the rule of the key they copy. When they still are copies the
# problem is reported once, under the key the user sets.
_COPIES = {
    "data.seed": "seed",
    "model.cut_layer": "sfl.cut_layer",
    "model.image_size": "data.image_size",
    "module.num_clients": "sfl.num_clients",
    "module.fedavg_weights": "sfl.fedavg_weights",
    "module.queue_size": "sfl.queue_size",
    "module.temperature": "sfl.temperature",
    "module.ema_decay": "sfl.ema_decay",
    "module.loss": "sfl.loss",
    "module.server_schedule": "sfl.server_schedule",
    "module.client_schedule": "sfl.client_schedule",
    "module.legacy_client_period": "sfl.legacy_client_period",
    "module.client_engine": "sfl.client_engine",
    "module.image_size": "data.image_size",
    "callbacks.fedavg.sync_momentum": "sfl.sync_momentum",
    "callbacks.costs.sync_momentum": "sfl.sync_momentum",
    "callbacks.linear_probe.seed": "seed",
}
_BY_KEY = {key: (kind, bound, text) for key, kind, bound, text in RULES}
ALL_RULES = RULES + [(copy, *_BY_KEY[source]) for copy, source in _COPIES.items()]
