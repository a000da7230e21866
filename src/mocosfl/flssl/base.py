"""What every FL-SSL method (FL-MoCo, FedBYOL, FedEMA) shares besides its model and its step.

An FL-SSL client trains the whole network on its own images and the server averages the
round's clients. These methods run on MocoSFL's clock and data (docs/design.md, "FL-SSL
baselines"): a step is one local optimizer step of every client of the step's pool, a round is
``sfl.sync_every`` steps ended by the FedAvg callback, which averages ``bank``.
"""

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn

from mocosfl.costs import CostModels
from mocosfl.errors import ConfigError, check_all
from mocosfl.models import SplitModel
from mocosfl.sfl.clients import ClientBank
from mocosfl.sfl.ddp import keep_out_of_ddp
from mocosfl.sfl.loss import loss_mode
from mocosfl.sfl.method import ClientRunState
from mocosfl.sfl.schedules import LRSchedule

# The client schedules that need nothing but the step: the legacy one reads a period that only
# MocoSFL's split run defines.
SCHEDULES = ("cosine_step", "cosine_epoch", "constant")


def flssl_checks(
    method: str, loss: str, client_schedule: str, client_engine: str
) -> list[tuple[bool, str]]:
    """The (ok, message) checks of the ``sfl`` settings that an FL-SSL method ``method`` (its
    module= name) takes fewer values of than MocoSFL."""
    return [
        (
            loss != "legacy_sum",
            f"sfl.loss=legacy_sum is MocoSFL's split quirk; module={method} takes two_way or "
            "one_way",
        ),
        (
            client_schedule in SCHEDULES,
            f"sfl.client_schedule={client_schedule!r}; module={method} takes one of "
            f"{', '.join(SCHEDULES)}",
        ),
        (
            client_engine == "loop",
            f"sfl.client_engine={client_engine!r}; module={method} runs the loop engine",
        ),
    ]


def whole_network(split_model: SplitModel, head: nn.Module) -> nn.Sequential:
    """An FL-SSL client's encoder: ``client -> server -> head`` (named so), the whole network
    that MocoSFL splits. images [B, C, H, W] -> [B, head's out_dim]."""
    parts = OrderedDict(client=split_model.client, server=split_model.server, head=head)
    return nn.Sequential(parts)


class StepClock(torch.optim.Optimizer):
    """The optimizer Lightning holds for an FL-SSL method; its step changes nothing.

    Under manual optimization ``trainer.global_step`` counts the steps of the module's Lightning
    optimizers, and the real optimizers are the bank's, one per client: stepping this clock once
    per training step makes ``global_step`` count steps, as for MocoSFL.
    """

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        super().__init__(params, {})

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return closure() if closure is not None else None


class FLSSLMethod(ClientRunState, L.LightningModule):
    """The Lightning plumbing of an FL-SSL method around its client bank ``self.bank``.

    A subclass passes its own checks to ``__init__``, builds ``self.bank`` (whose client model
    is the whole network, :func:`whole_network`) and writes ``training_step``;
    :meth:`online_encoder` says where the backbone and the projection head are in the bank's
    client model.
    """

    bank: ClientBank
    client_schedule: LRSchedule
    loss_mode: str
    method = "flssl"  # the module= name, for messages
    # Whether FedAvg may average the momentum copies too (sfl.sync_momentum): MoCo's may,
    # BYOL's targets stay every client's own.
    syncs_momentum = True

    def __init__(
        self,
        checks: Iterable[tuple[bool, str]],
        loss: str,
        client_schedule: str,
        client_engine: str,
    ) -> None:
        """Refuse bad settings in one line before anything is built: the method's ``checks``,
        then the ``sfl`` values an FL-SSL method does not take (:func:`flssl_checks`)."""
        check_all([*checks, *flssl_checks(self.method, loss, client_schedule, client_engine)])
        super().__init__()
        self.loss_mode = loss_mode(loss)
        self.client_schedule = LRSchedule(client_schedule)
        self.automatic_optimization = False
        # As MocoSFL's: the resolved run config and its linked source, set by the entry point.
        self.run_config: dict[str, Any] | None = None
        self.run_source: dict[str, Any] | None = None
        self._code_epoch_steps: int | None = None  # the data module's, set in setup()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return StepClock(self.bank.online.parameters())

    def setup(self, stage: str) -> None:
        """Keep every tensor out of DDP (each is a client's, exchanged after every step by the
        method's ``training_step``, :mod:`mocosfl.sfl.ddp`); take the original's epoch for
        ``cosine_epoch`` from the data module's plan."""
        keep_out_of_ddp(self, self.method)
        plan = getattr(self.trainer.datamodule, "plan", None)
        self._code_epoch_steps = None if plan is None else plan.code_epoch_steps

    def client_lr(self, step: int) -> float:
        """Every client's learning rate at step ``step`` (the schedule is the same for all)."""
        steps = int(self.trainer.estimated_stepping_batches)
        epoch = self._code_epoch_steps or max(1, int(self.trainer.num_training_batches))
        return self.bank.base_lr * self.client_schedule.factor(step, steps, epoch)

    def online_encoder(self, model: nn.Module) -> nn.Sequential:
        """The part of the bank's client model ``model`` that is ``client -> server -> head``."""
        return model

    @torch.no_grad()
    def encoder(self, feature: str = "backbone") -> nn.Module:
        """A frozen, eval-mode copy of the averaged model (what a FedAvg now would give).

        ``feature="backbone"`` ends at the pooled backbone feature [B, feature_dim];
        ``"head"`` adds the projection head [B, head_out_dim].
        """
        if feature not in ("backbone", "head"):
            raise ConfigError(f"feature={feature!r}: choose backbone or head")
        model = self.online_encoder(self.bank.averaged_client())
        parts = [model.client, model.server, *([model.head] if feature == "head" else [])]
        return nn.Sequential(*parts).eval().requires_grad_(False)

    def cost_models(self, sync_momentum: bool) -> CostModels:
        """The :class:`~mocosfl.costs.CostModels` of one client (the protocol
        :class:`~mocosfl.costs.FLSSLModule`): its online network (forward + backward for each
        view), its momentum copy (a forward for each view), what FedAvg moves (the online
        network, and the momentum copy with ``sync_momentum`` where the method averages it) and
        the views an image (2 for ``two_way``, 1 for ``one_way``)."""
        online, momentum = self.bank.online[0], self.bank.momentum[0]
        both = sync_momentum and self.syncs_momentum
        exchanged = [online, momentum] if both else [online]
        views = 2 if self.loss_mode == "two_way" else 1
        return CostModels(online=online, momentum=momentum, exchanged=exchanged, views=views)
