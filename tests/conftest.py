"""Shared fixtures: quiet W&B, fixed threads, and Hydra-composed training configs."""

import os
import tarfile
from pathlib import Path

import pytest
import torch
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


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """The real CIFAR-10 (JPEG copy from ../shared/data), extracted once per test session."""
    if not SHARED_CIFAR10.is_file():
        pytest.skip(f"real CIFAR-10 not found at {SHARED_CIFAR10}")
    root = tmp_path_factory.mktemp("cifar")
    with tarfile.open(SHARED_CIFAR10) as archive:
        archive.extractall(root, filter="data")
    return root / "cifar10-jpeg"
