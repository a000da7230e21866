"""The server of a deployment: ``mocosfl.train``'s training, its clients reached through a
transport (:mod:`mocosfl.deploy.flower_app` runs it inside Flower's ServerApp)."""

from typing import Any

from omegaconf import DictConfig, open_dict

from mocosfl.deploy.wire import ClientTransport
from mocosfl.utils.run import CONFIG_DIR


def compose_run(overrides: list[str], output_dir: str) -> DictConfig:
    """``conf/train.yaml`` with ``overrides`` as ``mocosfl.train`` composes it, writing into
    ``output_dir`` (outside Hydra's command line, so its runtime settings are set here)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = output_dir
        del cfg.hydra
    return cfg


def train_with(cfg: DictConfig, clients: ClientTransport) -> dict[str, Any]:
    """Validate ``cfg`` as ``mocosfl.train`` does and train (or, with ``resume=``, go on
    training) with the ``remote`` engine."""
    from mocosfl.config import validate_config
    from mocosfl.train import train

    validate_config(cfg)
    return train(cfg, clients)
