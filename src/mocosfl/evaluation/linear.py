"""The probe: a classifier trained on frozen features, used by the callback and the evaluations.

One function, :func:`train_probe`, serves the online linear probe (cheap settings), the
standalone linear evaluation (the paper's settings: Adam 1e-3, 100 epochs, batch 128) and the
semi-supervised one (an MLP on a class-balanced 10% or 1% of the labels). The training epoch is
chosen on the validation split and the test split is scored once, with that epoch's weights.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
)

from mocosfl.errors import check_all, settings_from
from mocosfl.evaluation.features import Split
from mocosfl.models.layers import init_xavier_

HEADS = ("linear", "mlp")
SCHEDULES = ("cosine", "multistep", "constant")
# The paper's semi-supervised milestones, epochs 60 and 80 of 100, as fractions of the budget.
MULTISTEP_MILESTONES = (0.6, 0.8)


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How the probe trains. The defaults are the paper's linear evaluation (docs/paper.md,
    "Evaluation"), with the fixes of docs/differences.md ("linear / semi-supervised probe"):
    shuffled batches, a cosine over the whole budget, stepped every batch, and the epoch chosen
    on the validation split."""

    head: str = "linear"  # linear: Linear(D, C); mlp: D -> D -> BN -> ReLU -> C (semi-supervised)
    epochs: int = 100
    lr: float = 1e-3  # Adam
    batch_size: int = 128
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | multistep (x0.1 at 60% and 80%) | constant
    standardize: bool = False  # scale features by the labelled set's mean/std (conditioning only)
    label_fraction: float = 1.0  # class-balanced share of the training labels used

    def __post_init__(self) -> None:
        checks = [
            (self.head in HEADS, f"probe.head={self.head!r}; choose {' or '.join(HEADS)}"),
            (
                self.schedule in SCHEDULES,
                f"probe.schedule={self.schedule!r}; choose {', '.join(SCHEDULES)}",
            ),
            (self.epochs >= 1, f"probe.epochs={self.epochs}; use at least 1"),
            (self.batch_size >= 2, f"probe.batch_size={self.batch_size}; use at least 2"),
            (self.lr > 0, f"probe.lr={self.lr}; use a positive learning rate"),
            (self.weight_decay >= 0, f"probe.weight_decay={self.weight_decay}; use 0 or more"),
            (
                0 < self.label_fraction <= 1,
                f"probe.label_fraction={self.label_fraction}; use a value in (0, 1]",
            ),
        ]
        check_all(checks)

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> "ProbeSettings":
        """Settings from a config mapping; an unknown key is a one-line ConfigError."""
        return settings_from(cls, values, "probe")


@dataclasses.dataclass
class ProbeResult:
    """What one probe run measured; accuracies in percent, JSON-ready (plain lists)."""

    val_curve: list[float]  # [epochs] validation top-1 after each epoch
    train_loss: list[float]  # [epochs] mean training loss of each epoch
    epoch: int  # the chosen epoch (1-based): best validation top-1, the earliest on ties
    val_top1: float  # validation top-1 of the chosen epoch
    num_labelled: int  # training examples the probe saw
    test_top1: float | None = None  # test top-1 of the chosen epoch
    test_per_class: list[float] | None = None  # [C] test accuracy of each class
    test_confusion: list[list[int]] | None = None  # [C, C] counts, rows true, columns predicted

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def accuracy(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Top-1 accuracy in percent of class scores [N, C] against labels [N]."""
    top1 = multiclass_accuracy(scores, labels, num_classes=num_classes, average="micro")
    return float(top1) * 100.0


def balanced_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded, class-balanced ``fraction`` of ``labels`` [N].

    Every class keeps ``round(fraction * its count)`` examples, at least one, so that even 1% of
    a small set still shows each class.
    """
    rng = np.random.default_rng([int(seed), 31])
    y = labels.cpu().numpy()
    keep = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        count = max(1, round(fraction * members.shape[0]))
        keep.append(rng.choice(members, count, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(keep))).to(labels.device)


def make_head(kind: str, dim: int, num_classes: int) -> nn.Module:
    """The probe's classifier; Xavier-uniform weights and zero biases as the original."""
    if kind == "linear":
        head = nn.Linear(dim, num_classes)
    else:
        head = nn.Sequential(
            nn.Linear(dim, dim),
            nn.BatchNorm1d(dim),
            nn.ReLU(inplace=True),
            nn.Linear(dim, num_classes),
        )
    return init_xavier_(head)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at batch ``step`` of ``total``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total))
    if schedule == "multistep":
        return 0.1 ** sum(step >= m * total for m in MULTISTEP_MILESTONES)
    return 1.0


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Index batches of ``order``; a last batch of one joins the previous one, because
    BatchNorm cannot train on a single example."""
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


@torch.no_grad()
def predict(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Class scores [N, C] in eval mode (BatchNorm uses its running statistics)."""
    head.eval()
    return head(features)


def train_probe(
    train: Split,
    val: Split,
    num_classes: int,
    settings: ProbeSettings = ProbeSettings(),
    seed: int = 0,
    test: Split | None = None,
) -> ProbeResult:
    """Train a classifier on frozen features and score it.

    Args:
        train, val, test: (features [N, D] float, labels [N] int64) on one device; the probe runs
            there. ``test`` is scored once, with the weights of the chosen epoch.
        settings: see :class:`ProbeSettings`.
        seed: fixes the label subset, the initial weights and the batch order; the result is a
            function of the inputs, the settings and the seed (the global RNG is left untouched).
    """
    x, y = train
    if settings.label_fraction < 1:
        subset = balanced_subset(y, settings.label_fraction, seed)
        x, y = x[subset], y[subset]
    mean = x.mean(0) if settings.standardize else torch.zeros_like(x[0])
    std = x.std(0).clamp_min(1e-6) if settings.standardize else torch.ones_like(x[0])
    x, val_x = (x - mean) / std, (val[0] - mean) / std

    with torch.random.fork_rng(devices=[]):  # the probe must not move the training run's RNG
        torch.manual_seed(seed)
        head = make_head(settings.head, x.shape[1], num_classes).to(x.device)
    order_rng = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(
        head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    total = settings.epochs * len(batches(torch.arange(x.shape[0]), settings.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(settings.schedule, step, total)
    )

    val_curve, train_loss, best_state, epoch = [], [], None, 0
    for e in range(1, settings.epochs + 1):
        head.train()
        losses = []
        order = torch.randperm(x.shape[0], generator=order_rng).to(x.device)
        with torch.enable_grad():  # callbacks may run under no_grad
            for idx in batches(order, settings.batch_size):
                loss = F.cross_entropy(head(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.detach())
        train_loss.append(float(torch.stack(losses).mean()))
        val_curve.append(accuracy(predict(head, val_x), val[1], num_classes))
        if best_state is None or val_curve[-1] > val_curve[epoch - 1]:
            epoch = e
            best_state = {k: v.clone() for k, v in head.state_dict().items()}

    result = ProbeResult(val_curve, train_loss, epoch, val_curve[epoch - 1], int(x.shape[0]))
    if test is not None:
        head.load_state_dict(best_state)
        scores = predict(head, (test[0] - mean) / std)
        result.test_top1 = accuracy(scores, test[1], num_classes)
        per_class = multiclass_accuracy(scores, test[1], num_classes=num_classes, average="none")
        result.test_per_class = (per_class * 100.0).tolist()
        confusion = multiclass_confusion_matrix(scores, test[1], num_classes=num_classes)
        result.test_confusion = confusion.tolist()
    return result
