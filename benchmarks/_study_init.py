"""The kNN top-1 of each study run's network at random initialisation: the floor each row's
gain is measured from, and the first point (0 images) of its learning curve.

A run's network is rebuilt as ``mocosfl.train`` builds it (its config, the seed, the data module
set up, then the model), so it is the network the run starts from. Runs whose backbone weights,
seed and data settings are identical are measured once. Imports torch: ``study.py`` imports
this module only when it measures.
"""

from __future__ import annotations

import hashlib
from typing import Any

import hydra
import lightning as L
import torch
from _study_rows import Row, Settings, compose
from omegaconf import OmegaConf

from mocosfl.data import build_datamodule
from mocosfl.evaluation import knn_top1


def _network_at_init(settings: Settings, row: Row, seed: int) -> tuple[Any, Any, str]:
    """The run's datamodule, its backbone at initialisation and the key of a measurement."""
    cfg = compose(settings, row, seed)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = hydra.utils.instantiate(
        cfg.module,
        split_model=hydra.utils.instantiate(cfg.model),
        client_sizes=datamodule.client_sizes.tolist(),
    )
    backbone = module.encoder("backbone")
    digest = hashlib.sha256(OmegaConf.to_yaml(cfg.data, resolve=True).encode())
    for tensor in backbone.state_dict().values():
        digest.update(tensor.cpu().numpy().tobytes())
    return datamodule, backbone, f"{seed}-{digest.hexdigest()}"


def knn_at_init(
    settings: Settings, runs: list[tuple[str, Row, int]], threads: int
) -> dict[tuple[str, int], dict[str, float]]:
    """``{(row, seed): {"val": top-1, "test": top-1}}`` (%) of each run's network at
    initialisation (val only when the study has a validation split)."""
    torch.set_num_threads(threads)
    splits = ("val", "test") if settings.val_images else ("test",)
    measured: dict[str, dict[str, float]] = {}
    out = {}
    for name, row, seed in runs:
        datamodule, backbone, key = _network_at_init(settings, row, seed)
        if key not in measured:
            top1 = knn_top1(backbone, datamodule, splits)
            measured[key] = {split: top1[split][0] for split in splits}
            print(f"{name} seed {seed}: kNN at initialisation {measured[key]}", flush=True)
        out[(name, seed)] = measured[key]
    return out
