"""Public API: a training checkpoint back as an encoder and the data it was trained on.

Every checkpoint a run writes carries ``run_config`` (the resolved Hydra config), so the
checkpoint alone rebuilds the model and the data split::

    encoder = load_encoder("logs/train/runs/<run>/checkpoints/final.ckpt")   # images -> [B, 512]
    datamodule = load_datamodule(ckpt_path, root="data/cifar10", num_workers=0)
    datamodule.setup()
    feats, labels = extract_features(encoder, datamodule.eval_dataloader("test"))

Checkpoints are unpickled (they hold numpy RNG states): load only files you trust.
"""

import pickle
from pathlib import Path
from typing import Any

import hydra
import torch
from torch import nn

from mocosfl.data import FederatedDataModule
from mocosfl.errors import ConfigError
from mocosfl.sfl import MocoSFL


def load_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, memory-mapped (reading ``run_config`` alone touches no weights)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ConfigError(
            f"ckpt_path={ckpt_path} is not a readable checkpoint: {str(exc).splitlines()[0]}"
        ) from exc
    if not isinstance(ckpt, dict) or not ckpt.get("run_config"):
        raise ConfigError(
            f"{ckpt_path} has no run_config; use a checkpoint written by mocosfl.train"
        )
    return ckpt


def load_module(ckpt_path: str | Path) -> MocoSFL:
    """The trained MocoSFL module (on the CPU), built from the checkpoint's run config as
    ``mocosfl.train`` builds it, with the checkpoint's weights; ``module.run_config`` is set."""
    ckpt = load_checkpoint(ckpt_path)
    run_config = ckpt["run_config"]
    state = ckpt["state_dict"]
    module = hydra.utils.instantiate(
        run_config["module"],
        split_model=hydra.utils.instantiate(run_config["model"]),
        # The FedAvg weights are a buffer of the checkpoint; they stand in for the data sizes.
        client_sizes=state["bank.weights"].tolist(),
    )
    module.load_state_dict(state)
    module.run_config = run_config
    return module


def load_encoder(ckpt_path: str | Path, feature: str = "backbone") -> nn.Module:
    """Frozen, eval-mode encoder: normalised images [B, 3, H, W] -> features [B, D].

    The FedAvg client model followed by the server; ``feature="backbone"`` ends at the pooled
    backbone feature (D = ``model.feature_dim``, 512 for ResNet-18), ``"head"`` adds the
    projection head.
    """
    return load_module(ckpt_path).encoder(feature)


def load_datamodule(ckpt_path: str | Path, **overrides: Any) -> FederatedDataModule:
    """The run's data module (same data set, validation split and client partition), not yet
    set up. ``overrides`` replace ``data.*`` settings that do not change the split, e.g.
    ``root`` (the data moved), ``num_workers`` or ``eval_batch_size``."""
    data = dict(load_checkpoint(ckpt_path)["run_config"]["data"])
    unknown = sorted(set(overrides) - set(data))
    if unknown:
        raise ConfigError(
            f"unknown data setting(s) {', '.join(unknown)}; "
            f"the run's are: {', '.join(sorted(data))}"
        )
    return hydra.utils.instantiate({**data, **overrides})
