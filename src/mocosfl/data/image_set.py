"""Every data set becomes an :class:`ImageSet`: one in-memory uint8 tensor ``[N, 3, H, W]`` plus
int64 labels; and the normalisation statistics it is seen with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from mocosfl.errors import ConfigError

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]  # per-channel mean, std

# Normalisation statistics on [0, 1] pixels, by ``data.stats`` name: the values the original
# normalises CIFAR-10, CIFAR-100 and ImageNet-12 with, each data set its own (docs/differences.md,
# row "normalisation statistics"). Its CIFAR-10 std, kept here, is not the std over the training
# pixels, about (0.247, 0.243, 0.261).
NAMED_STATS: dict[str, Stats] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": (
        (0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
        (0.2673342858792401, 0.2564384629170883, 0.27615047132568404),
    ),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet-12 in the original
}
STATS_CHOICES = (*NAMED_STATS, "computed")  # computed: from the training split (pixel_stats)
# What each data set normalises with when ``data.stats`` is not given. An image folder can hold
# anything, so its own pixels decide; the synthetic images keep CIFAR-10's fixed values, so that
# they do not depend on data.synthetic.* and smoke-test runs stay as they were.
DEFAULT_STATS = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "imagefolder": "computed",
    "synthetic": "cifar10",
}
DATASET_STATS: dict[str, Stats] = {
    name: NAMED_STATS[stats] for name, stats in DEFAULT_STATS.items() if stats in NAMED_STATS
}
_STATS_PIXELS_PER_CHUNK = 1 << 22  # bounds the copy pixel_stats makes of one channel


@dataclass
class ImageSet:
    """A whole split in memory."""

    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def pixel_stats(images: torch.Tensor) -> Stats:
    """Per-channel mean and (population) std on [0, 1] of uint8 images ``[N, 3, H, W]``.

    Counted as one 256-bin histogram per channel, a chunk of images at a time: exact, and the
    only copy is one channel of one chunk, never a float copy of the whole set.
    """
    n, _, height, width = images.shape
    chunk = max(1, _STATS_PIXELS_PER_CHUNK // (height * width))
    counts = torch.zeros(3, 256, dtype=torch.int64)
    for start in range(0, n, chunk):
        block = images[start : start + chunk]
        for c in range(3):
            counts[c] += torch.bincount(block[:, c].reshape(-1), minlength=256)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    share = counts.double() / counts.sum(dim=1, keepdim=True)
    mean = (share * levels).sum(dim=1)
    std = (share * (levels - mean.view(3, 1)) ** 2).sum(dim=1).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def saved_stats(state: Mapping[str, torch.Tensor]) -> Stats:
    """The ``(mean, std)`` a data module's state holds (float64 ``[3]`` tensors under ``mean``
    and ``std``). A checkpoint written before they were stored normalised every data set with
    CIFAR-10's (then the only statistics)."""
    if "mean" not in state:
        return NAMED_STATS["cifar10"]
    return tuple(state["mean"].tolist()), tuple(state["std"].tolist())


def check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'")


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch to size x size (bilinear, antialiased), in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], 4096):
        x = images[i : i + 4096].float()
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[i : i + 4096] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out
