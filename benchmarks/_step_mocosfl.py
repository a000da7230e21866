"""The federated measurement: milliseconds per training step of the real
:class:`mocosfl.sfl.MocoSFL` module (``module`` of ``conf/train.yaml``, its client engine
``sfl.client_engine``) inside the configured Lightning ``Trainer``, so that Lightning's per-step
overhead is included.

A step trains a pool of P = ``sfl.clients_per_step`` clients on b = ``sfl.client_batch_size``
images each (query and key views [P, b, 3, S, S]); with more clients than the pool, the pool
moves on every step (step t trains clients ``(t * P + i) % clients``), so that the engines gather
and scatter different clients, as in a real 1000-client run. FedAvg runs once per round, not per
step, and is not timed (no FedAvg callback).
"""

from __future__ import annotations

import time
from typing import Any

import hydra
import lightning as L
import torch
from torch.utils.data import DataLoader

from _build import build_split, synchronize


class StepTimer(L.Callback):
    """Wall-clock time of every training batch after the first ``warmup`` ones, in ms."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup = warmup
        self.device = device
        self.ms: list[float] = []
        self._start = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        synchronize(self.device)
        if batch_idx >= self.warmup:
            self.ms.append((time.perf_counter() - self._start) * 1e3)


def federated_batches(
    query: torch.Tensor, key: torch.Tensor, clients: int, pool: int
) -> list[dict[str, Any]]:
    """Split every server batch [B, 3, S, S] over the step's pool: the module's [P, B / P, 3, S,
    S] layout. Step t trains clients ``(t * P + arange(P)) % clients``."""
    offsets = torch.arange(pool, device=query.device)
    return [
        {
            "query": q.view(pool, -1, *q.shape[1:]),
            "key": k.view(pool, -1, *k.shape[1:]),
            "client_ids": (step * pool + offsets) % clients,
            "step": step,
        }
        for step, (q, k) in enumerate(zip(query, key))
    ]


def time_mocosfl(
    cfg: dict[str, Any], query: torch.Tensor, key: torch.Tensor, warmup: int
) -> list[float]:
    """Train the module of ``cfg`` on views [steps, B, 3, S, S] for ``trainer.max_steps``
    steps; the ms of the steps after ``warmup``."""
    module = hydra.utils.instantiate(cfg["module"], split_model=build_split(cfg))
    timer = StepTimer(warmup, query.device)
    trainer = hydra.utils.instantiate(
        cfg["trainer"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[timer],
    )
    sfl = cfg["sfl"]
    batches = federated_batches(query, key, sfl["num_clients"], sfl["clients_per_step"])
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return timer.ms
