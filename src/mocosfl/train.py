"""Train MocoSFL: ``python -m mocosfl.train data=cifar10 sfl.num_clients=100 ...``."""

import signal
import sys
import time
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
from mocosfl.api import final_checkpoint, load_checkpoint
from mocosfl.callbacks import FedAvgCallback, RunInterrupted
from mocosfl.cli import hydra_entry
from mocosfl.config import validate_config
from mocosfl.data import build_datamodule
from mocosfl.deploy.wire import ClientTransport
from mocosfl.errors import ConfigError
from mocosfl.privacy.taressfl import init_from_checkpoint
from mocosfl.sfl.remote_clients import RemoteClientBank
from mocosfl.utils.history import HistoryLogger
from mocosfl.utils.plots import label_histogram
from mocosfl.utils.resume import frozen_source, resume_checkpoint, resumed_config
from mocosfl.utils.run import (
    instantiate_each,
    with_num_threads,
    write_metrics,
)
from mocosfl.utils.summary import duration, print_summary


def check_config(cfg: DictConfig) -> None:
    """Settings no single object can judge on its own."""
    if cfg.data.name != "synthetic" and not cfg.data.get("root"):
        raise ConfigError(
            f"data={cfg.data.name} needs data.root=<folder>"
            + (
                " (the folder that holds train/ and test/)"
                if cfg.data.name == "imagefolder"
                else ""
            )
        )
    callbacks = cfg.get("callbacks") or {}
    knn = callbacks.get("knn") or {}
    needs_val = [
        name
        for name, on in (
            ("callbacks.knn", knn.get("every_n_epochs") or knn.get("every_n_steps")),
            ("callbacks.linear_probe", callbacks.get("linear_probe")),
        )
        if on
    ]
    if cfg.data.get("val_images") == 0 and needs_val:
        raise ConfigError(
            f"data.val_images=0 leaves no validation split for {' and '.join(needs_val)}; "
            "add callbacks.knn.every_n_epochs=0 (and every_n_steps=0) and "
            "~callbacks.linear_probe (test/knn_top1 is still measured at the end)"
        )
    if cfg.model.norm == "bn" and cfg.sfl.client_batch_size < 8:
        raise ConfigError(
            f"model.norm=bn needs sfl.client_batch_size >= 8 (got {cfg.sfl.client_batch_size}): "
            "batch statistics of a few images are noise; use model.norm=gn"
        )


def save_partition(datamodule: Any, trainer: L.Trainer, out_dir: Path) -> None:
    """Keep the run's partition next to its checkpoints and show it in W&B."""
    np.savez_compressed(out_dir / "partition.npz", **datamodule.partition_state())
    fig = label_histogram(datamodule.label_counts(), datamodule.classes)
    fig.savefig(out_dir / "partition.png", dpi=100)
    plt.close(fig)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            # The saved file, not the figure: wandb.Image(fig) would draw it a second time.
            logger.experiment.log({"data/partition": wandb.Image(str(out_dir / "partition.png"))})


def run_config_of(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config stored in every checkpoint, with ``data.root`` made absolute so that
    the checkpoint is usable from any directory (a notebook runs from ``notebooks/``)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if config.get("data", {}).get("root"):
        config["data"]["root"] = str(Path(config["data"]["root"]).resolve())
    return config


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def resume_command(run_dir: Path, deployed: bool, more: str = "") -> str:
    """The command that continues the run in ``run_dir`` (with the overrides ``more``)."""
    overrides = f"resume={run_dir}{more}"
    if deployed:  # the clients start again too, built from the run's settings
        return f'make deploy-loopback CLIENTS=<clients> ARGS="<its overrides> {overrides}"'
    return f"python -m mocosfl.train {overrides}"


def print_train_summary(
    out_dir: Path, trainer: L.Trainer, seconds: float, metrics: dict[str, float], title: str
) -> None:
    checkpoints = out_dir / "checkpoints"
    final = checkpoints / "final.ckpt"
    rows = [
        ("run directory", out_dir),
        ("steps", trainer.global_step),
        ("wall time", duration(seconds)),
        *((name, metrics.get(key)) for key, name in SUMMARY_METRICS),
        ("checkpoint", final if final.is_file() else checkpoints / "last.ckpt"),
        ("history", out_dir / "history.csv"),
    ]
    deployed = isinstance(getattr(trainer.lightning_module, "bank", None), RemoteClientBank)
    if final.is_file():
        split = hasattr(trainer.lightning_module, "cut_layer")  # FL-MoCo has no latents to attack
        commands = [
            f"make eval CKPT={final}",
            *([f"make attack CKPT={final}"] if split else []),
            resume_command(out_dir, deployed, " trainer.max_steps=<more steps>"),
        ]
    else:
        commands = [resume_command(out_dir, deployed)]
    print_summary(title, rows, commands)


SUMMARY_METRICS = (
    ("train/loss", "train loss"),
    ("val/knn_top1", "val kNN top-1 (%)"),
    ("test/knn_top1", "test kNN top-1 (%)"),
    ("val/linear_top1", "val linear top-1 (%)"),
    ("test/linear_top1", "test linear top-1 (%)"),
    ("attack/mse", "attack MSE"),
    ("attack_paper/mse", "attack MSE (paper's protocol)"),
)


def train(cfg: DictConfig, clients: ClientTransport | None = None) -> dict[str, Any]:
    """Build everything from the config, fit, and write ``metrics.json``; returns its content.

    A resume (``resume=`` or ``ckpt_path=``) runs with the config rebuilt from its checkpoint.
    A run stopped by SIGINT or SIGTERM returns ``{"interrupted": <signal name>, ...}`` after
    writing ``last.ckpt`` for its last step. ``clients``: as :func:`fit`'s.
    """
    ckpt_path = resume_checkpoint(cfg.get("resume"), cfg.get("ckpt_path"))
    if ckpt_path:  # before the thread count is set: the run's own decides float rounding
        cfg = resumed_config(cfg, load_checkpoint(ckpt_path))
    return fit(cfg, ckpt_path, clients)


@with_num_threads
def fit(
    cfg: DictConfig, ckpt_path: str | None = None, clients: ClientTransport | None = None
) -> dict[str, Any]:
    """:func:`train` once the config is final: ``ckpt_path`` is the checkpoint to resume;
    with ``clients`` the clients are deployed ones reached through that transport (the
    ``remote`` engine, :mod:`mocosfl.deploy`), not simulated."""
    check_config(cfg)
    # Taken before anything is instantiated: instantiate resolves shared nodes in place.
    run_config, run_source = run_config_of(cfg), frozen_source(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")  # every data check runs now, before any model is built
    callbacks = instantiate_each(cfg.callbacks)
    if not any(isinstance(cb, FedAvgCallback) for cb in callbacks):
        raise ConfigError(
            "callbacks.fedavg is missing: FedAvg cannot be dropped silently; "
            "set sfl.sync_every=0 to train without FedAvg"
        )
    loggers = [*instantiate_each(cfg.logger), HistoryLogger(out_dir)]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    if datamodule.plan.clients_per_step % trainer.world_size:
        raise ConfigError(
            f"sfl.clients_per_step={datamodule.plan.clients_per_step} cannot be split evenly over "
            f"{trainer.world_size} processes (trainer.devices x trainer.num_nodes)"
        )
    # Built in the run's dtype (on the CPU, as before), so that a resume of a 64-true run
    # restores its float64 weights as saved, not rounded through float32.
    with trainer.precision_plugin.tensor_init_context():
        split_model = hydra.utils.instantiate(cfg.model)
        remote = {} if clients is None else {"client_engine": "remote"}
        module = hydra.utils.instantiate(
            cfg.module,
            split_model=split_model,
            client_sizes=datamodule.client_sizes.tolist(),
            **remote,
        )
    if clients is not None:
        module.bank.connect(clients, datamodule.image_size, datamodule.plan.client_batch_size)
        datamodule.step_dataset().views = False  # the clients make their own
    module.run_config, module.run_source = run_config, run_source
    if "init_from" in cfg:  # TAResSFL stage 2 starts from the stage-1 expert
        init_from_checkpoint(module, cfg.init_from, cfg.get("expert_target_fraction"))
    for logger in trainer.loggers:
        logger.log_hyperparams(module.run_config)
    if trainer.is_global_zero:
        save_partition(datamodule, trainer, out_dir)

    started = time.monotonic()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except RunInterrupted as stop:  # Lightning has finalized the loggers
        metrics = final_metrics(trainer)
        if trainer.is_global_zero:
            title = f"train: stopped by {signal.Signals(stop.signum).name} after step {stop.step}"
            print_train_summary(out_dir, trainer, time.monotonic() - started, metrics, title)
        return {**metrics, "interrupted": signal.Signals(stop.signum).name, "step": stop.step}
    metrics = final_metrics(trainer)
    extra = {"seed": cfg.seed, "global_step": trainer.global_step}
    if not trainer.is_global_zero:  # every process holds the same numbers; one writes them
        return {**metrics, **extra}
    final = out_dir / "checkpoints" / "final.ckpt"
    final.parent.mkdir(parents=True, exist_ok=True)
    torch.save(final_checkpoint(module, datamodule.state_dict(), trainer.global_step), final)
    record = write_metrics(out_dir / "metrics.json", metrics, **extra)
    print_train_summary(out_dir, trainer, time.monotonic() - started, metrics, "train: done")
    return record


def sweep_job(cfg: DictConfig) -> float | None:
    """:func:`train` after the config's types and ranges are checked; returns
    ``optimized_metric`` for sweepers, and exits as a signalled process when interrupted."""
    validate_config(cfg)
    metrics = train(cfg)
    if "interrupted" in metrics:  # the conventional exit status of a signalled process
        sys.exit(128 + signal.Signals[metrics["interrupted"]].value)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


cli = hydra_entry("train", sweep_job)  # python -m mocosfl.train, mocosfl-train

if __name__ == "__main__":
    cli()
