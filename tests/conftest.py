"""Shared fixtures: quiet W&B, fixed threads, and Hydra-composed training configs."""

import itertools
import os
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from helpers import ROOT, compose

SHARED_CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)


@pytest.fixture
def compose_train(tmp_path):
    """compose_train(overrides) -> the train config with outputs and data under tmp_path."""

    def _compose(overrides: list[str] = ()):
        cfg = compose("train", tmp_path / "run", list(overrides))
        with open_dict(cfg):
            cfg.paths.data_dir = str(tmp_path / "data")
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def train_cli(capfd, monkeypatch):
    """train_cli(*overrides) -> (exit code, stderr) of ``python -m mocosfl.train <overrides>``
    run in this process (W&B off): the console entry itself, without a fresh interpreter."""
    from mocosfl.train import cli

    def _run(*overrides: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["mocosfl.train", *overrides])
        capfd.readouterr()
        try:
            cli()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            GlobalHydra.instance().clear()
        return code, capfd.readouterr().err

    return _run


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """The real CIFAR-10 (JPEG copy from ../shared/data), extracted once per test session (one
    copy for all the workers of ``pytest -n``)."""
    if not SHARED_CIFAR10.is_file():
        pytest.skip(f"real CIFAR-10 not found at {SHARED_CIFAR10}")
    session_dir = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's folder lies in the session's
        session_dir = session_dir.parent
    root = session_dir / "cifar"
    with FileLock(session_dir / "cifar.lock"):
        if not (root / "extracted").is_file():
            with tarfile.open(SHARED_CIFAR10) as archive:
                archive.extractall(root, filter="data")
            (root / "extracted").touch()
    return root / "cifar10-jpeg"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Place the long tests so that ``pytest -n W --dist worksteal`` (``make test``) runs them
    side by side: that scheduler gives each worker one contiguous W-th of the list, so the long
    tests, longest first, each go to the head of the part with the fewest seconds so far."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # set in each worker

    def seconds(item: pytest.Item) -> float:
        return item.get_closest_marker("long").kwargs["seconds"]

    long = sorted((i for i in items if i.get_closest_marker("long")), key=seconds, reverse=True)
    rest = [i for i in items if not i.get_closest_marker("long")]
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for item in long:
        min(heads, key=lambda head: sum(map(seconds, head))).append(item)
    size = len(items) // workers  # the part sizes as worksteal cuts them
    ordered: list[pytest.Item] = []
    others = iter(rest)
    for w, head in enumerate(heads):
        ordered += head
        end = (w + 1) * size if w < workers - 1 else len(items)
        ordered += itertools.islice(others, max(end - len(ordered), 0))
    items[:] = [*ordered, *others]
