"""Several processes (DDP) for the federated methods: which share of a step's pool a process
trains, and how the processes then exchange what their clients did.

A step's pool is split into equal contiguous shares, one per process (:func:`owned_slice`; the
data module loads each process its share). After the step every process gets the pool's client
state from the process that trained it (:func:`share_pool`), and per-client tensors of the step
(keys for a queue) are put back together in pool order (:func:`gather_pool`), so that every
process holds the same whole state and FedAvg, checkpoints and evaluation run as on one process.
A method whose every tensor is a client's (the FL-SSL methods) has nothing for DDP to all-reduce:
:class:`FederatedDDPStrategy` then leaves it unwrapped.
"""

from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from mocosfl.errors import ConfigError


def owned_slice(pool_size: int, rank: int, world: int) -> slice:
    """The contiguous share of a pool of ``pool_size`` clients that process ``rank`` of ``world``
    trains (equal shares when ``world`` divides ``pool_size``, as the entry point requires)."""
    return slice(rank * pool_size // world, (rank + 1) * pool_size // world)


def whole_pool(module: L.LightningModule, batch: dict[str, Any]) -> list[int]:
    """The step's whole pool, in order, on every process (``batch["pool"]``); on one process
    the pool is ``batch["client_ids"]``."""
    return batch["pool" if module.trainer.world_size > 1 else "client_ids"].tolist()


def share_pool(module: L.LightningModule, batch: dict[str, Any]) -> list[int]:
    """After each process trained its share of the step's pool (``batch["client_ids"]``): give
    every process the whole pool's client state (``module.bank.share_pool``: models, momentum
    copies, SGD state, step counts) and return the whole pool (:func:`whole_pool`). On one
    process nothing moves."""
    trainer = module.trainer
    pool = whole_pool(module, batch)
    if trainer.world_size > 1:
        owned = owned_slice(len(pool), trainer.global_rank, trainer.world_size)
        module.bank.share_pool(pool, owned)
    return pool


def gather_pool(module: L.LightningModule, x: torch.Tensor) -> torch.Tensor:
    """This process's per-client tensor [P / world * m, ...] (its share's rows, in order) ->
    the whole pool's [P * m, ...] in pool order, on every process; ``x`` itself on one."""
    if module.trainer.world_size == 1:
        return x
    return module.all_gather(x).flatten(0, 1)


def keep_out_of_ddp(module: L.LightningModule, method: str) -> None:
    """For a method whose every tensor is a client's (an FL-SSL method), from its ``setup()``:
    tell DDP to leave all of them alone (they travel by :func:`share_pool` and
    :func:`gather_pool`), and refuse a strategy of several processes that would wrap the module
    anyway (``method``: the ``module=`` name the one-line error gives)."""
    module._ddp_params_and_buffers_to_ignore = [
        name for name, _ in [*module.named_parameters(), *module.named_buffers()]
    ]
    strategy = module.trainer.strategy
    if module.trainer.world_size > 1 and not isinstance(strategy, FederatedDDPStrategy):
        raise ConfigError(
            f"module={method} on several processes runs with trainer=ddp's strategy "
            f"(mocosfl.sfl.ddp.FederatedDDPStrategy), not {type(strategy).__name__}"
        )


def nothing_to_reduce(module: nn.Module) -> bool:
    """Whether every parameter of ``module`` is one DDP is told to leave alone
    (``_ddp_params_and_buffers_to_ignore``), i.e. the module exchanges all of them itself."""
    ignored = set(getattr(module, "_ddp_params_and_buffers_to_ignore", ()))
    return all(name in ignored for name, _ in module.named_parameters())


class FederatedDDPStrategy(DDPStrategy):
    """Lightning's DDP (``trainer=ddp``), except that a module with nothing for DDP to all-reduce
    (:func:`nothing_to_reduce`: an FL-SSL method, whose every tensor is a client's) is not
    wrapped: torch's DistributedDataParallel refuses such a module. The process group,
    ``all_gather``, ``log(..., sync_dist=True)`` and the launcher are Lightning's, unchanged."""

    def configure_ddp(self) -> None:
        if nothing_to_reduce(self.model):
            return
        super().configure_ddp()
