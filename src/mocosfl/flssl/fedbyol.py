"""FedBYOL: FedAvg of BYOL models, the FL-BYOL baseline of the paper's Table 2 (Zhuang et al.,
ICLR 2022; EasyFL's ``applications/fedssl`` with ``--model byol --aggregate_encoder online
--update_encoder online --update_predictor global``).

Every client trains an online network (backbone, projector, predictor) against its own target
network (an EMA of the online backbone and projector); FedAvg averages the round's online
networks and every client takes the average, while each target stays its client's own
(docs/design.md, "FL-SSL baselines").
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mocosfl.flssl.base import FLSSLMethod, whole_network
from mocosfl.models import BYOLHead, SplitModel
from mocosfl.sfl.ddp import share_pool, whole_pool
from mocosfl.sfl.loop_clients import LoopClientBank
from mocosfl.sfl.method import fedavg_weights_of


class BYOLNet(nn.Module):
    """A BYOL client's online network: ``encoder`` (``client -> server -> head``, the head being
    the projector) then ``predictor``. images [B, C, H, W] -> predictions [B, out_dim]."""

    def __init__(self, encoder: nn.Sequential, predictor: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.encoder(images))


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss ``2 - 2 cos(p, z)`` of each image: [B, D], [B, D] -> [B].

    ``target`` (the target network's projection) is a constant. At least float32 (under bf16
    autocast too).
    """
    dtype = torch.promote_types(prediction.dtype, torch.float32)
    p = F.normalize(prediction.to(dtype), dim=1)
    z = F.normalize(target.detach().to(dtype), dim=1)
    return 2 - 2 * (p * z).sum(dim=1)


class TargetClientBank(LoopClientBank):
    """The loop bank of a BYOL method: each client's momentum copy is its target network, an EMA
    of the online ``encoder`` only (the predictor has none), and FedAvg leaves it alone: both
    FedBYOL and FedEMA keep every client's target its own (EasyFL), so ``sfl.sync_momentum``,
    MoCo's setting, does not apply."""

    def momentum_part(self, model: nn.Module) -> nn.Module:
        return model.encoder

    def fedavg(self, sync_momentum: bool = True) -> dict[str, float] | None:
        return super().fedavg(sync_momentum=False)

    @torch.no_grad()
    def receive(self, ids: Sequence[int]) -> None:
        """Before the first step of a round of clients ``ids``: a client that never trained
        takes its online encoder (the last FedAvg's) as its target, as EasyFL builds a client's
        target from the global model the first time it trains."""
        for c in ids:
            if not self.steps[c]:
                self.momentum[c].load_state_dict(self.online[c].encoder.state_dict())

    @torch.no_grad()
    def load_client(self, state: dict[str, torch.Tensor]) -> None:
        """Give every client the online state ``state`` and every target its ``encoder`` part."""
        everyone = range(self.num_clients)
        self.set_states("online", everyone, {k: v[None] for k, v in state.items()})
        prefix = "encoder."
        target = {k[len(prefix) :]: v[None] for k, v in state.items() if k.startswith(prefix)}
        self.set_states("momentum", everyone, target)


class FedBYOL(FLSSLMethod):
    """FedAvg of BYOL models on MocoSFL's clock and data (:mod:`mocosfl.flssl.base`).

    A training batch is one federated step from ``FederatedDataModule``::

        {"query": [P, b, C, H, W], "key": [P, b, C, H, W], "client_ids": [P], "step": int}

    and each of the ``P`` clients takes one local step on its own ``b`` images: its online
    network predicts its target's projection of the other view, then the target moves by EMA
    (after the step, as in EasyFL). ``loss="two_way"`` sums both directions (EasyFL's loss, so
    its learning rate carries over); ``"one_way"`` keeps the first.
    """

    method = "fedbyol"
    syncs_momentum = False  # the targets stay every client's own (TargetClientBank)

    def __init__(
        self,
        split_model: SplitModel,
        num_clients: int,
        client_optimizer: Callable[..., torch.optim.Optimizer],
        client_sizes: Sequence[int] | None = None,
        fedavg_weights: str = "data",
        ema_decay: float = 0.99,
        loss: str = "two_way",
        client_batch_size: int = 128,
        head_hidden_dim: int = 4096,
        head_out_dim: int = 2048,
        predictor_hidden_dim: int = 4096,
        client_schedule: str = "cosine_step",
        client_engine: str = "loop",
        bank_factory: Callable[..., TargetClientBank] = TargetClientBank,
    ) -> None:
        checks = [
            (num_clients >= 1, f"sfl.num_clients={num_clients}; use at least 1"),
            (0 <= ema_decay < 1, f"sfl.ema_decay={ema_decay}; use a value in [0, 1)"),
            (
                client_batch_size >= 2,
                f"sfl.client_batch_size={client_batch_size}; module={self.method} needs at least "
                "2 images a client step (BYOL's heads use BatchNorm)",
            ),
        ]
        super().__init__(checks, loss, client_schedule, client_engine)
        weights = fedavg_weights_of(fedavg_weights, client_sizes)
        encoder = whole_network(
            split_model, BYOLHead(split_model.feature_dim, head_hidden_dim, head_out_dim)
        )
        predictor = BYOLHead(head_out_dim, predictor_hidden_dim, head_out_dim)
        self.bank = bank_factory(
            BYOLNet(encoder, predictor), num_clients, client_optimizer, ema_decay, weights
        )

    def online_encoder(self, model: nn.Module) -> nn.Sequential:
        return model.encoder

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One local step of every pool client on its own views ``query``/``key`` [P, b, C, H, W];
        returns the pool's mean loss []."""
        ids = batch["client_ids"].tolist()
        # Every process starts the whole pool's new clients from the same bank, so what
        # receive() writes (FedEMA's round-start buffers too) needs no exchange.
        starting = [c for c in whole_pool(self, batch) if not self.bank.participated[c]]
        self.bank.receive(starting)
        views = [(batch["query"], batch["key"])]
        if self.loss_mode == "two_way":
            views.append((batch["key"], batch["query"]))
        pool = len(ids)

        terms, predictions = [], []
        for online_images, target_images in views:
            prediction = self.bank.encode(ids, online_images)
            target = self.bank.encode_momentum(ids, target_images)
            terms.append(byol_loss(prediction, target).unflatten(0, (pool, -1)).mean(1))
            predictions.append(prediction)
        # Client i's loss is the sum of its view terms [P]; the clients' graphs are disjoint, so
        # one backward of their sum gives each client the gradient of its own loss.
        client_losses = torch.stack(terms).sum(0)
        self.manual_backward(client_losses.sum())
        lr = self.client_lr(self.trainer.global_step)
        self.bank.step(ids, lambda c: lr)
        self.optimizers().step()  # the clock: global_step counts this step
        self.bank.update_momentum(ids)
        # Several processes: each trained its share of the pool; now every one gets all of it.
        share_pool(self, batch)

        loss = client_losses.mean().detach()
        normalised = F.normalize(predictions[0].detach().float(), dim=1)
        # Means over the processes' equal shares: the whole pool's.
        sync = self.trainer.world_size > 1
        self.log("train/loss", loss, prog_bar=True, sync_dist=sync)
        self.log("train/feature_std", normalised.std(0).mean(), sync_dist=sync)
        self.log("lr/client", lr)
        return loss
