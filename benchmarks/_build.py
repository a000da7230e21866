"""What every step-time measurement is built from: ``conf/train.yaml`` composed with the
benchmark's settings (Hydra's compose API, as the tests compose it), the seeded split model, the
random images on the device, and the device sync around each timed step.

Only the images are the benchmark's own: random views generated up front and kept on the device,
so that no measurement pays for data loading, augmentation or host-to-device copies. The
network, the optimizers, the queue, the temperature, the momentum decay, the loss, the head and
the Trainer come from the configs, so the benchmark trains what a training run trains.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import hydra
import torch
from omegaconf import OmegaConf

from mocosfl.config import validate_config
from mocosfl.models import SplitModel
from mocosfl.utils.run import CONFIG_DIR

# The nodes of the composed config that a measurement reads, resolved to plain values.
NODES = ("model", "module", "sfl", "trainer")
# The run directory (the Trainer's default_root_dir): the benchmark writes no run files (no
# logger, no checkpoints), so any directory does.
NO_RUN_FILES = [f"paths.output_dir={tempfile.gettempdir()}"]


def compose_train(overrides: list[str]) -> dict[str, Any]:
    """``conf/train.yaml`` with ``overrides``, checked as ``mocosfl.train`` checks it; the nodes
    of :data:`NODES` as plain dicts, with ``seed`` and ``num_threads``."""
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra.compose("train", overrides=[*overrides, *NO_RUN_FILES])
    validate_config(cfg)
    plain = {node: OmegaConf.to_container(cfg[node], resolve=True) for node in NODES}
    return {**plain, "seed": cfg.seed, "num_threads": cfg.num_threads}


def pool_size(clients: int, server_batch: int) -> int:
    """Clients trained in one step: all of them, or one image each when there are more."""
    return min(clients, server_batch)


def server_batch(cfg: dict[str, Any]) -> int:
    """Images of one server step: the pool times each client's batch."""
    return cfg["sfl"]["clients_per_step"] * cfg["sfl"]["client_batch_size"]


def config_defaults() -> dict[str, Any]:
    """The network and step of ``conf/train.yaml`` left at its defaults (the paper's, see
    docs/paper.md), under the benchmark's option names: what ``--paper`` runs."""
    cfg = compose_train([])
    model, sfl = cfg["model"], cfg["sfl"]
    return {
        "arch": model["arch"],
        "width": model["width"],
        "cut_layer": sfl["cut_layer"],
        "norm": model["norm"],
        "image_size": model["image_size"],
        "server_batch": server_batch(cfg),
        "loss": sfl["loss"],
    }


def train_overrides(args: argparse.Namespace, engine: str, clients: int) -> list[str]:
    """The overrides of ``conf/train.yaml`` for one measurement: the benchmark's options, the
    engine, ``clients`` clients of which a pool of ``min(clients, server batch)`` trains each
    step on ``server batch / pool`` images each, and a budget of warmup + timed steps.

    FedAvg runs once per round and is not timed, so its weights are uniform (no data module
    gives the clients' sizes)."""
    pool = pool_size(clients, args.server_batch)
    return [
        f"model={args.arch}",
        f"model.width={args.width}",
        f"model.norm={args.norm}",
        f"data.image_size={args.image_size}",
        f"sfl.cut_layer={args.cut_layer}",
        f"sfl.num_clients={clients}",
        f"sfl.clients_per_step={pool}",
        f"sfl.client_batch_size={args.server_batch // pool}",
        f"sfl.queue_size={args.queue_size}",
        f"sfl.loss={args.loss}",
        f"sfl.client_engine={engine}",
        "sfl.fedavg_weights=uniform",
        f"trainer={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"trainer.precision={args.precision}",
        f"trainer.max_steps={args.warmup + args.steps}",
        f"num_threads={args.threads}",
    ]


def build_split(cfg: dict[str, Any]) -> SplitModel:
    """The split network of ``cfg["model"]`` from ``cfg["seed"]``, so that every measurement
    starts from the same weights."""
    torch.manual_seed(cfg["seed"])
    return hydra.utils.instantiate(cfg["model"])


def make_images(cfg: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key views, each [steps, server batch, 3, S, S] (steps = ``trainer.max_steps``,
    S = ``model.image_size``), from ``cfg["seed"]``, already on ``device``."""
    generator = torch.Generator().manual_seed(cfg["seed"])
    size = cfg["model"]["image_size"]
    shape = (cfg["trainer"]["max_steps"], server_batch(cfg), 3, size, size)
    query = torch.randn(shape, generator=generator)
    key = torch.randn(shape, generator=generator)
    return query.to(device), key.to(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers the whole step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
