"""CIFAR-10 / CIFAR-100 through ``torchvision.datasets.CIFAR10`` / ``CIFAR100`` (which downloads
when ``download=True`` and the files are missing). torchvision refuses files whose md5 differs
from the published batches, so when the batch files are present but fail that check (e.g. tiny
files written by a test, or a re-pickled copy), they are read directly in the same original
pickle format (``data_batch_1..5`` + ``test_batch`` with ``b"labels"`` for CIFAR-10, ``train`` +
``test`` with ``b"fine_labels"`` for CIFAR-100; ``batches.meta`` / ``meta`` for the class names),
without touching the network. Files that cannot be read at all are re-downloaded when
``download=True``. Missing files offline raise :class:`ConfigError` naming the remedies."""

from __future__ import annotations

import os
import pickle
import socket

import numpy as np
import torch

from mocosfl.errors import ConfigError

from .image_set import ImageSet, check_split, resize_uint8

__all__ = ["load_cifar"]

_DOWNLOAD_SOCKET_TIMEOUT_S = 30.0

_CIFAR = {
    "cifar10": {
        "title": "CIFAR-10",
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "meta_key": "label_names",
        "label_key": "labels",
    },
    "cifar100": {
        "title": "CIFAR-100",
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "meta_key": "fine_label_names",
        "label_key": "fine_labels",
    },
}


def _cifar_files_present(info: dict, root: str) -> bool:
    folder = os.path.join(root, info["folder"])
    names = info["train"] + info["test"] + [info["meta"]]
    return all(os.path.isfile(os.path.join(folder, n)) for n in names)


def _unpickle(path: str) -> dict:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict):
        raise ValueError("not a pickled dict")
    # Files written with protocol 2+ from Python 3 may keep bytes keys; normalise to str.
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


def _read_cifar_pickles(info: dict, root: str, split: str) -> ImageSet:
    """Read the original CIFAR pickle batches directly (same format torchvision reads)."""
    folder = os.path.join(root, info["folder"])
    datas, labels = [], []
    for fname in info[split]:
        entry = _unpickle(os.path.join(folder, fname))
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{fname}: 'data' has shape {data.shape}, expected [n, 3072]")
        lab = entry.get(info["label_key"], entry.get("labels"))
        if lab is None:
            raise ValueError(f"{fname}: no {info['label_key']!r} entry")
        lab = np.asarray(lab, dtype=np.int64)
        if lab.shape[0] != data.shape[0]:
            raise ValueError(f"{fname}: {data.shape[0]} images but {lab.shape[0]} labels")
        datas.append(data)
        labels.append(lab)
    meta = _unpickle(os.path.join(folder, info["meta"]))
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[info["meta_key"]]]
    images = np.concatenate(datas).reshape(-1, 3, 32, 32)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(np.concatenate(labels)), classes)


def _reason(exc: BaseException, limit: int = 160) -> str:
    """``Type: message`` on one line, shortened."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _torchvision_cifar(key: str, root: str, split: str, download: bool) -> ImageSet:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if key == "cifar10" else CIFAR100
    old = socket.getdefaulttimeout()
    if download and old is None:  # never hang forever on a dead network
        socket.setdefaulttimeout(_DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        ds = cls(root, train=(split == "train"), download=download)
    finally:
        socket.setdefaulttimeout(old)
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    labels = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
    return ImageSet(images, labels, list(ds.classes))


def load_cifar(
    name: str, root: str, split: str, download: bool = True, image_size: int = 32
) -> ImageSet:
    """CIFAR-10 / CIFAR-100 from ``root`` (torchvision layout), downloading when allowed."""
    check_split(split)
    info = _CIFAR[name]
    root = os.path.expanduser(str(root))
    title, folder = info["title"], os.path.join(root, info["folder"])
    remedies = (
        f"Fix: run with network access and data.download=true, copy {info['archive']} or "
        f"the {info['folder']} folder into {root}, or use data=imagefolder data.root=<folder> "
        "(or data=synthetic)"
    )
    result: ImageSet | None = None
    problem = f"{title} not found in {root}"
    if _cifar_files_present(info, root):
        try:  # md5-checked read; no network since the files are there
            result = _torchvision_cifar(name, root, split, download=False)
        except RuntimeError:
            try:  # the files exist but are not the published ones: read the same format
                result = _read_cifar_pickles(info, root, split)
            except Exception as exc:
                problem = f"{title} files in {folder} are unreadable ({_reason(exc)})"
                if not download:
                    raise ConfigError(
                        f"{problem}; delete them and set data.download=true, or copy intact files"
                    ) from None
    if result is None:
        if not download:
            raise ConfigError(f"{problem} and data.download=false. {remedies}")
        try:
            result = _torchvision_cifar(name, root, split, download=True)
        except Exception as exc:
            raise ConfigError(
                f"{problem} and it could not be downloaded ({_reason(exc)}). {remedies}"
            ) from None
    if image_size != 32:
        result.images = resize_uint8(result.images, image_size)
    return result
