"""``load_image_set(name, root, split, ...)``: one split of a data set as an
:class:`~mocosfl.data.image_set.ImageSet`, from its source: ``cifar10`` / ``cifar100``
(:mod:`~mocosfl.data.cifar`), ``imagefolder`` (:mod:`~mocosfl.data.image_folder`) or ``synthetic``
(:mod:`~mocosfl.data.synthetic`)."""

from __future__ import annotations

from mocosfl.errors import ConfigError

from .cifar import load_cifar
from .image_folder import load_image_folder
from .image_set import ImageSet, check_split
from .synthetic import make_synthetic

__all__ = ["DATASET_NAMES", "load_image_set"]

DATASET_NAMES = ("cifar10", "cifar100", "imagefolder", "synthetic")


def load_image_set(
    name: str,
    root: str,
    split: str,
    download: bool = True,
    image_size: int = 32,
    synthetic: dict | None = None,
) -> ImageSet:
    """Load one split of a data set as an :class:`ImageSet` of ``image_size`` (at least 8) px
    square images (see the module docstring)."""
    check_split(split)
    key = str(name).lower()
    if key in ("cifar10", "cifar100"):
        return load_cifar(key, root, split, download=download, image_size=image_size)
    if key == "imagefolder":
        return load_image_folder(root, split, image_size=image_size)
    if key == "synthetic":
        return make_synthetic(split, image_size=image_size, **dict(synthetic or {}))
    raise ConfigError(
        f"unknown data set {name!r}; use one of {', '.join(DATASET_NAMES)} (data=<name>)"
    )
