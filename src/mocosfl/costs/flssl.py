"""Costs of an FL-SSL client (federated self-supervised learning without a split): each client
trains the whole network on its own images and FedAvg averages whole models, so no latents cross
a cut (the paper's Table 1, "FL-SSL").

The accounting is MocoSFL's (:mod:`mocosfl.costs.profile`, :mod:`mocosfl.costs.report`): the
same measurement on a CPU copy, the same FLOP convention (forward + backward of the model that
trains for each view of an image, a forward of the momentum or target copy for each view; the
loss itself is not counted), the same activation memory (what autograd saves for the backward of
each trained view, plus each momentum output) and the same FedAvg traffic formula.

**The protocol.** A method is an FL-SSL method for the costs when its LightningModule has

    ``cost_models(sync_momentum: bool) -> CostModels``

(:class:`FLSSLModule`): the models one client runs and exchanges. ``CostCallback`` and
``python -m mocosfl.overhead`` call it; the overhead builds the module as ``mocosfl.train`` does
but with one client (``num_clients=1, client_sizes=[1]``): a client's costs do not depend on how
many there are. Any client's models will do (they have one structure); the models are measured
on deep copies and never changed. :class:`mocosfl.flssl.base.FLSSLMethod` implements it for
every FL-SSL method: ``online`` is the client's online network (FL-MoCo: ``client -> server ->
head``; FedBYOL and FedEMA: that encoder followed by the predictor), ``momentum`` its momentum
copy (FedBYOL, FedEMA: the target encoder, no predictor), ``exchanged`` the online network, plus
the momentum copy when ``sync_momentum`` and the method averages it (FL-MoCo; BYOL's targets stay
on the client), and ``views`` 2 for ``two_way`` (1 for ``one_way``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from torch import nn

from mocosfl.costs.profile import ClientCosts, fedavg_numel, measure_client
from mocosfl.costs.report import (
    MFLOPS,
    cost_metrics,
    training_activation_bytes,
    training_flops,
)
from mocosfl.costs.traffic import MB, Traffic, model_sync_bytes
from mocosfl.sfl.plan import FederatedPlan

__all__ = ["CostModels", "FLSSLModule", "FLSSLRunCosts", "flssl_run_costs"]


@dataclass(frozen=True)
class CostModels:
    """What one FL-SSL client runs and what FedAvg moves, as :func:`flssl_run_costs` measures it.

    online: the model the client trains, images [B, C, H, W] -> its output (e.g. [B, D]); forward
        and backward for each view of an image.
    momentum: its momentum (MoCo) or target (BYOL) copy, a forward for each view; None if there
        is none.
    exchanged: the models FedAvg uploads at each sync (the client downloads their average): their
        parameters and float buffers, as ``ClientBank.average`` takes them.
    views: the views of an image each model encodes in a step (2 for a symmetric loss).
    """

    online: nn.Module
    momentum: nn.Module | None
    exchanged: Sequence[nn.Module]
    views: int


@runtime_checkable
class FLSSLModule(Protocol):
    """A LightningModule whose costs are an FL-SSL client's (see the module docstring)."""

    def cost_models(self, sync_momentum: bool) -> CostModels:
        """The models of one client; ``sync_momentum`` is ``sfl.sync_momentum`` (whether FedAvg
        also averages the momentum copies, for a method that can)."""
        ...


@dataclass(frozen=True)
class FLSSLRunCosts:
    """An FL-SSL run's costs per client: the measured models and the FedAvg traffic of an average
    client per epoch and over the run (no latents, no gradients: nothing crosses a cut)."""

    online: ClientCosts
    momentum: ClientCosts | None
    exchanged_numel: int  # values FedAvg moves each way at a sync, all exchanged models together
    exchanged_models: int
    views: int
    client_batch_size: int
    steps_per_epoch: int
    total_steps: int
    per_epoch: Traffic
    whole_run: Traffic

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    @property
    def _forward_only(self) -> tuple[ClientCosts, int]:
        return (self.online, 0) if self.momentum is None else (self.momentum, self.views)

    @property
    def training_flops_per_image(self) -> int:
        """Forward + backward of the online model for each view, a momentum forward for each."""
        return training_flops(self.online, self.views, *self._forward_only)

    @property
    def training_activation_bytes_per_image(self) -> int:
        """The online model's saved forward for each view, and each momentum output."""
        return training_activation_bytes(self.online, self.views, *self._forward_only)

    @property
    def training_activation_bytes_per_batch(self) -> int:
        """The same at the client's batch (``sfl.client_batch_size`` images)."""
        return self.training_activation_bytes_per_image * self.client_batch_size

    def metrics(self) -> dict[str, float]:
        """MocoSFL's ``cost/*`` metrics (``cost/latent_numel`` = 0: no latent crosses a cut) and
        ``cost/client_activation_mb_per_batch``."""
        metrics = cost_metrics(
            client=self.online,
            latent_numel=0,
            training_flops=self.training_flops_per_image,
            activation_bytes=self.training_activation_bytes_per_image,
            steps_per_epoch=self.steps_per_epoch,
            per_epoch=self.per_epoch,
            whole_run=self.whole_run,
        )
        metrics["cost/client_activation_mb_per_batch"] = (
            self.training_activation_bytes_per_batch / MB
        )
        return metrics

    def summary(self) -> dict:
        """Everything, in bytes and FLOPs, for ``overhead.json``."""
        return {
            **asdict(self),
            "epochs": self.epochs,
            "training_flops_per_image": self.training_flops_per_image,
            "training_mflops_per_image": self.training_flops_per_image / MFLOPS,
            "training_activation_bytes_per_image": self.training_activation_bytes_per_image,
            "training_activation_bytes_per_batch": self.training_activation_bytes_per_batch,
        }


def flssl_run_costs(
    models: CostModels,
    image_shape: tuple[int, ...],
    plan: FederatedPlan,
    *,
    steps_per_epoch: int,
    total_steps: int,
    bytes_per_element: int = 4,
) -> FLSSLRunCosts:
    """Measure ``models`` (on images of shape ``image_shape`` [C, H, W]) and work out an average
    client's FedAvg traffic per epoch and over ``total_steps`` steps of ``plan``."""
    exchanged = sum(fedavg_numel(m) for m in models.exchanged)

    def traffic(syncs: float) -> Traffic:
        each_way = model_sync_bytes(plan, syncs, exchanged, bytes_per_element)
        return Traffic(latents_up=0.0, gradients_down=0.0, model_up=each_way, model_down=each_way)

    return FLSSLRunCosts(
        online=measure_client(models.online, image_shape),
        momentum=None if models.momentum is None else measure_client(models.momentum, image_shape),
        exchanged_numel=exchanged,
        exchanged_models=len(models.exchanged),
        views=models.views,
        client_batch_size=plan.client_batch_size,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        per_epoch=traffic(plan.syncs_per_epoch(steps_per_epoch)),
        whole_run=traffic(plan.syncs_in_run(total_steps)),
    )
