"""Train MocoSFL: ``python -m mocosfl.train data=cifar10 sfl.num_clients=100 ...``."""

from pathlib import Path
from typing import Any

import hydra
import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

import mocosfl  # noqa: F401  (registers the config resolvers)
from mocosfl.callbacks import FedAvgCallback
from mocosfl.errors import ConfigError
from mocosfl.privacy.taressfl import init_from_checkpoint
from mocosfl.utils.plots import label_histogram
from mocosfl.utils.run import instantiate_each, user_errors, with_num_threads, write_metrics


def check_config(cfg: DictConfig) -> None:
    """Settings no single object can judge on its own."""
    if cfg.model.norm == "bn" and cfg.sfl.client_batch_size < 8:
        raise ConfigError(
            f"model.norm=bn needs sfl.client_batch_size >= 8 (got {cfg.sfl.client_batch_size}): "
            "batch statistics of a few images are noise; use model.norm=gn"
        )
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} does not exist")


def save_partition(datamodule: Any, trainer: L.Trainer, out_dir: Path) -> None:
    """Keep the run's partition next to its checkpoints and show it in W&B."""
    np.savez_compressed(out_dir / "partition.npz", **datamodule.partition_state())
    fig = label_histogram(datamodule.label_counts(), datamodule.classes)
    fig.savefig(out_dir / "partition.png", dpi=100)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({"data/partition": wandb.Image(fig)})
    plt.close(fig)


@with_num_threads
def train(cfg: DictConfig) -> dict[str, Any]:
    """Build everything from the config, fit, and write ``metrics.json``; returns its content."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")  # every data check runs now, before any model is built
    split_model = hydra.utils.instantiate(cfg.model)
    module = hydra.utils.instantiate(
        cfg.module, split_model=split_model, client_sizes=datamodule.client_sizes.tolist()
    )
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    if "init_from" in cfg:  # TAResSFL stage 2 starts from the stage-1 expert
        init_from_checkpoint(module, cfg.init_from, cfg.get("expert_target_fraction"))
    callbacks = instantiate_each(cfg.callbacks)
    if not any(isinstance(cb, FedAvgCallback) for cb in callbacks):
        raise ConfigError(
            "callbacks.fedavg is missing: FedAvg cannot be dropped silently; "
            "set sfl.sync_every=0 to train without FedAvg"
        )
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=instantiate_each(cfg.logger)
    )
    if datamodule.clients_per_step % trainer.world_size:
        raise ConfigError(
            f"sfl.clients_per_step={datamodule.clients_per_step} cannot be split evenly over "
            f"{trainer.world_size} processes (trainer.devices x trainer.num_nodes)"
        )
    for logger in trainer.loggers:
        logger.log_hyperparams(module.run_config)
    if trainer.is_global_zero:
        save_partition(datamodule, trainer, out_dir)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.interrupted:
        return {}
    trainer.save_checkpoint(out_dir / "checkpoints" / "final.ckpt")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    extra = {"seed": cfg.seed, "global_step": trainer.global_step}
    if not trainer.is_global_zero:  # every process holds the same numbers; one writes them
        return {**metrics, **extra}
    return write_metrics(out_dir / "metrics.json", metrics, **extra)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``optimized_metric`` for sweepers."""
    with user_errors():
        metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
