"""Shared fixtures: quiet W&B, fixed threads, and Hydra-composed training configs."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)


@pytest.fixture
def compose_train(tmp_path):
    """compose_train(overrides) -> the train config with outputs under tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import mocosfl  # noqa: F401  (resolvers)

    def _compose(overrides: list[str] = ()):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.root_dir = str(ROOT)
            cfg.paths.data_dir = str(tmp_path / "data")
            del cfg.hydra
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
