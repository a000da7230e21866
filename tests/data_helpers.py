"""Helpers for the data tests: tiny CIFAR files in the original pickle format, tiny image trees,
data modules from flat settings."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from mocosfl.data import FederatedDataModule
from mocosfl.sfl.plan import FederatedPlan

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_tiny_cifar10(root: Path, per_batch: int = 4, test_size: int = 6, seed: int = 0) -> dict:
    """Write cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} under ``root`` with
    bytes keys, as the published Python-2 pickles have. Returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test_size if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        entry = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        _dump(folder / name, entry)
        written[name] = (data, np.asarray(labels))
    meta = {
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    _dump(folder / "batches.meta", meta)
    train = (
        np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]),
        np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)]),
    )
    return {"train": train, "test": written["test_batch"]}


def write_tiny_cifar100(
    root: Path, train_size: int = 12, test_size: int = 5, seed: int = 1
) -> dict:
    """Write cifar-100-python/{train, test, meta} (fine and coarse labels) under ``root``."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in (("train", train_size), ("test", test_size)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        coarse = [f // 5 for f in fine]
        entry = {
            b"filenames": [b"x.png"] * n,
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": data,
        }
        _dump(folder / name, entry)
        written[name] = (data, np.asarray(fine))
    meta = {
        b"fine_label_names": [f"c{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"s{i:02d}".encode() for i in range(20)],
    }
    _dump(folder / "meta", meta)
    return written


def write_image_tree(
    root: Path,
    classes=("cat", "dog", "frog"),
    per_class: dict[str, int] | None = None,
    size=(32, 32),
    seed: int = 0,
) -> dict[str, list[Path]]:
    """root/{train,test}/<class>/<i>.{png,jpg}: alternating PNG and JPEG, solid-ish colours.

    Returns the files written per split."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    per_class = per_class or {"train": 4, "test": 2}
    files: dict[str, list[Path]] = {}
    for split, n in per_class.items():
        files[split] = []
        for ci, cname in enumerate(classes):
            d = Path(root) / split / cname
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = np.clip(rng.normal(60 + 60 * ci, 10, (size[1], size[0], 3)), 0, 255).astype(
                    np.uint8
                )
                ext = "png" if i % 2 == 0 else "jpg"
                p = d / f"{i:04d}.{ext}"
                Image.fromarray(arr).save(p)
                files[split].append(p)
    return files


def federated_datamodule(**settings: Any) -> FederatedDataModule:
    """A FederatedDataModule (not set up) from flat settings: the :class:`FederatedPlan` fields
    among them (``num_clients``, ``sync_every``, ...) build its plan, whose pools are drawn with
    the data's ``seed`` as in a run; the rest are the data module's."""
    fields = {f.name for f in dataclasses.fields(FederatedPlan)} - {"seed"}
    plan = {k: v for k, v in settings.items() if k in fields}
    data = {k: v for k, v in settings.items() if k not in fields}
    return FederatedDataModule(plan=FederatedPlan(**plan, seed=data.get("seed", 1234)), **data)


def one_line(exc: Any) -> str:
    """The message of a ``pytest.raises`` result, which must be a single line."""
    message = str(exc.value)
    assert "\n" not in message
    return message
