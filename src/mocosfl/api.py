"""Public API: a training checkpoint back as an encoder and the data it was trained on.

Every checkpoint a run writes carries ``run_config`` (the resolved Hydra config), so the
checkpoint alone rebuilds the model and the data split::

    encoder = load_encoder("logs/train/runs/<run>/checkpoints/final.ckpt")   # images -> [B, 512]
    datamodule = load_datamodule(ckpt_path, root="data/cifar10", num_workers=0)
    datamodule.setup()
    feats, labels = extract_features(encoder, datamodule.eval_dataloader("test"))

Two kinds of checkpoint: ``last.ckpt`` / ``step_NNNNNNN.ckpt`` hold the full training state
(every client, optimizer, queue, RNG state: what a resume needs); ``final.ckpt`` holds what
evaluation needs (the model after the final FedAvg, the run config, the partition and the
normalisation statistics) and is small. Both hold tensors and plain Python values only, and are
loaded with ``torch.load(weights_only=True)``: a file with pickled objects (which could run code)
is refused.
"""

import pickle
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from torch import nn

from mocosfl.data import FederatedDataModule, build_datamodule
from mocosfl.errors import ConfigError
from mocosfl.evaluation import ProbeSettings
from mocosfl.utils.run import CONFIG_DIR
from mocosfl.utils.upgrade import upgrade_run_config

FINAL_FORMAT = "mocosfl-final"


def load_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, memory-mapped (reading ``run_config`` alone touches no weights),
    with ``weights_only=True``; its run config in today's layout (:func:`upgrade_run_config`)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"ckpt_path={ckpt_path} holds pickled Python objects, which could run code when "
            "loaded; refusing it (mocosfl writes tensors and plain values only)"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise ConfigError(
            f"ckpt_path={ckpt_path} is not a readable checkpoint: {str(exc).splitlines()[0]}"
        ) from exc
    if not isinstance(ckpt, dict) or not ckpt.get("run_config"):
        raise ConfigError(
            f"{ckpt_path} has no run_config; use a checkpoint written by mocosfl.train"
        )
    ckpt["run_config"] = upgrade_run_config(ckpt["run_config"])
    if ckpt.get("run_source"):
        source = ckpt["run_source"]
        ckpt["run_source"] = {**source, "config": upgrade_run_config(source["config"])}
    return ckpt


# The parts a split method keeps outside its client bank (MocoSFL's); FL-MoCo has none, its
# clients being whole networks.
SERVER_PARTS = ("server", "head")


def final_checkpoint(
    module: L.LightningModule, partition: dict[str, torch.Tensor], global_step: int
) -> dict:
    """The content of ``final.ckpt``: the FedAvg client model, the server and the head (for the
    methods that have them), the run config and, as ``partition``, the data module's
    ``state_dict()`` (the partition and the normalisation statistics)."""
    return {
        "format": FINAL_FORMAT,
        "run_config": module.run_config,
        "global_step": global_step,
        "client": module.bank.averaged_client().state_dict(),
        **{
            part: getattr(module, part).state_dict()
            for part in SERVER_PARTS
            if hasattr(module, part)
        },
        "partition": partition,
    }


def load_module(ckpt_path: str | Path) -> L.LightningModule:
    """The trained module of the run's method (on the CPU), built from the checkpoint's run
    config as ``mocosfl.train`` builds it, with its weights; ``module.run_config`` is set.

    From a ``final.ckpt`` the module has one client, the FedAvg model (the momentum copies
    start as copies of the online models, the queue is empty): all that evaluation and the
    attack read (``encoder``, ``bank.averaged_client``, ``server``, ``head``)."""
    ckpt = load_checkpoint(ckpt_path)
    run_config = ckpt["run_config"]
    final = ckpt.get("format") == FINAL_FORMAT
    module = hydra.utils.instantiate(
        {**run_config["module"], **({"num_clients": 1, "client_engine": "loop"} if final else {})},
        split_model=hydra.utils.instantiate(run_config["model"]),
        # The FedAvg weights are a buffer of the checkpoint; they stand in for the data sizes.
        client_sizes=[1] if final else ckpt["state_dict"]["bank.weights"].tolist(),
    )
    if final:
        module.bank.load_client(ckpt["client"])
        for part in SERVER_PARTS:
            if part in ckpt:
                getattr(module, part).load_state_dict(ckpt[part])
                getattr(module, f"{part}_momentum").load_state_dict(ckpt[part])
    else:
        module.load_state_dict(ckpt["state_dict"])
    module.run_config = run_config
    return module


def load_encoder(ckpt_path: str | Path, feature: str = "backbone") -> nn.Module:
    """Frozen, eval-mode encoder: normalised images [B, 3, H, W] -> features [B, D], normalised
    with the run's statistics (``load_datamodule(ckpt_path).mean`` / ``.std``).

    The FedAvg client model followed by the server; ``feature="backbone"`` ends at the pooled
    backbone feature (D = ``model.feature_dim``, 512 for ResNet-18), ``"head"`` adds the
    projection head.
    """
    return load_module(ckpt_path).encoder(feature)


def load_datamodule(ckpt_path: str | Path, **overrides: Any) -> FederatedDataModule:
    """The run's data module (same data set, validation split, client partition and
    normalisation statistics: those stored in the checkpoint), not yet set up. ``overrides``
    replace ``data.*`` settings that do not change the split, e.g. ``root`` (the data moved),
    ``num_workers`` or ``eval_batch_size``."""
    ckpt = load_checkpoint(ckpt_path)
    data = ckpt["run_config"]["data"]
    unknown = sorted(set(overrides) - set(data))
    if unknown:
        raise ConfigError(
            f"unknown data setting(s) {', '.join(unknown)}; "
            f"the run's are: {', '.join(sorted(data))}"
        )
    if "stats" in overrides:
        raise ConfigError(
            "data.stats cannot be overridden: a checkpoint is evaluated with the normalisation "
            "statistics it was trained with"
        )
    datamodule = build_datamodule(ckpt["run_config"], **overrides)
    # final.ckpt keeps the data state under "partition", a training checkpoint under the data
    # module's class name (Lightning's key)
    state = ckpt.get("partition", ckpt.get(type(datamodule).__qualname__, {}))
    datamodule.use_saved_stats(state)
    return datamodule


def probe_preset(name: str, **overrides: Any) -> ProbeSettings:
    """The probe settings of ``eval=<name>`` (linear, semi10, semi1), with ``overrides``.

    For notebooks and scripts; composes ``conf/eval.yaml``, so call it outside a Hydra app.
    """
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra.compose("eval", overrides=[f"eval={name}"])
    if cfg.eval.kind != "probe":
        raise ConfigError(f"eval={name} is not a probe; choose linear, semi10 or semi1")
    return ProbeSettings.from_config({**cfg.eval.probe, **overrides})
