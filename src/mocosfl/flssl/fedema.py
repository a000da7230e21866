"""FedEMA: divergence-aware federated BYOL (Zhuang et al., ICLR 2022; EasyFL's
``applications/fedssl`` with ``--update_encoder dynamic_ema_online --update_predictor
dynamic_dapu --auto_scaler y --auto_scaler_target 0.7``).

FedBYOL, except that a client does not take the global model as it is: at the start of its
next round it keeps ``mu`` of its own online network, ``mu * own + (1 - mu) * global``, with
``mu = min(1, scaler * divergence)``, ``divergence`` being how far its own conv weights moved
in its last round of local training. The scaler is set once per client, at its first blend, to
``target / divergence`` (the auto scaler: that first blend keeps ``target``), unless a constant
``weight_scaler`` is given (docs/design.md, "FL-SSL baselines").
"""

import copy
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.flssl.fedbyol import FedBYOL, TargetClientBank
from mocosfl.sfl.clients import OptimizerFactory


def conv_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight of every convolution of ``model``, in module order.

    EasyFL matches parameters named ``conv*`` instead, which leaves out its ResNet's shortcut
    convolutions; the heads are linear and count in neither.
    """
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


def layer_divergence(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> float:
    """FedEMA's divergence: the mean over layers of the L2 distance ``||after - before||``."""
    distances = [
        torch.dist(a.flatten().float(), b.flatten().float()) for a, b in zip(after, before)
    ]
    return float(torch.stack(distances).mean())


def ema_weight(divergence: float, scaler: float) -> float:
    """``mu = min(1, scaler * divergence)``: the share of its own model a client keeps."""
    return min(1.0, scaler * divergence)


class FedEMAClientBank(TargetClientBank):
    """The BYOL bank with FedEMA's aggregation.

    FedAvg keeps the round's average as ``global_model`` instead of loading it into the clients;
    :meth:`receive` blends it into each client as it starts its next round.

    Buffers (persistent, so a checkpoint resumes exactly):
        round_start: [N, M] each client's conv weights (M values) when it started its round.
        local_divergence: [N] its divergence in its last round (see :func:`layer_divergence`).
        scaler: [N] its scaler (0 until it is set, with the auto scaler).
    """

    def __init__(
        self,
        client: nn.Module,
        num_clients: int,
        optimizer: OptimizerFactory,
        ema_decay: float = 0.99,
        weights: Sequence[float] | None = None,
        scaler_target: float = 0.7,
        weight_scaler: float | None = None,
    ) -> None:
        super().__init__(client, num_clients, optimizer, ema_decay, weights)
        self.scaler_target = scaler_target
        self.global_model = copy.deepcopy(client).requires_grad_(False)
        self.conv_sizes = [w.numel() for w in conv_weights(client)]  # the split of round_start
        size = sum(self.conv_sizes)
        if size == 0:
            raise ConfigError(
                "module=fedema measures divergence on conv layers; the model has none"
            )
        self.register_buffer("round_start", torch.zeros(num_clients, size))
        self.register_buffer("local_divergence", torch.zeros(num_clients))
        self.register_buffer("scaler", torch.full((num_clients,), weight_scaler or 0.0))

    def _conv_vector(self, c: int) -> torch.Tensor:
        return torch.cat([w.detach().flatten() for w in conv_weights(self.online[c])])

    @torch.no_grad()
    def receive(self, ids: Sequence[int]) -> None:
        """Clients ``ids`` start a round: one that trained before blends the global model into its
        own online network (:func:`ema_weight`; normalisation statistics are the global's, as
        EasyFL's blend starts from a copy of the global model), its target stays its own; one
        that never trained takes the global model, target included."""
        state = self.global_model.state_dict()
        for c in ids:
            online = self.online[c]
            if not self.steps[c]:
                online.load_state_dict(state)
                self.momentum[c].load_state_dict(online.encoder.state_dict())
            else:
                if not self.scaler[c]:
                    self.scaler[c] = self.scaler_target / self.local_divergence[c]
                mu = ema_weight(float(self.local_divergence[c]), float(self.scaler[c]))
                own = {name: p.clone() for name, p in online.named_parameters()}
                online.load_state_dict(state)
                for name, p in online.named_parameters():
                    p.lerp_(own[name], mu)
            self.round_start[c] = self._conv_vector(c)

    @torch.no_grad()
    def fedavg(self, sync_momentum: bool = True) -> dict[str, float] | None:
        """Average the round's pool into ``global_model`` and note each pool client's divergence;
        the clients receive the average when they next train."""
        ids = self.pool_since_sync()
        if not ids:
            return None
        average = self.average("online", ids)
        stats = {"divergence": self.divergence(ids, average), "pool_size": float(len(ids))}
        for c in ids:
            start = self.round_start[c].split(self.conv_sizes)
            self.local_divergence[c] = layer_divergence(start, conv_weights(self.online[c]))
        self.global_model.load_state_dict(average)
        self.participated.zero_()
        return stats

    @torch.no_grad()
    def averaged_client(self) -> nn.Module:
        """The average of the clients that trained since the last FedAvg, else the last
        FedAvg's global model (the clients hold their own models until they receive it)."""
        if self.pool_since_sync():
            return super().averaged_client()
        return copy.deepcopy(self.global_model).requires_grad_(True)

    @torch.no_grad()
    def load_client(self, state: dict[str, torch.Tensor]) -> None:
        super().load_client(state)
        self.global_model.load_state_dict(state)


class FedEMA(FedBYOL):
    """FedBYOL with FedEMA's divergence-aware update of the clients (:class:`FedEMAClientBank`).

    ``scaler_target`` is the auto scaler's target (EasyFL's README runs 0.7); a number for
    ``weight_scaler`` uses that constant scaler instead.
    """

    method = "fedema"

    def __init__(
        self,
        *args,
        scaler_target: float = 0.7,
        weight_scaler: float | None = None,
        **kwargs,
    ) -> None:
        if not 0 < scaler_target <= 1:
            raise ConfigError(f"module.scaler_target={scaler_target}; use a value in (0, 1]")
        if weight_scaler is not None and weight_scaler <= 0:
            raise ConfigError(f"module.weight_scaler={weight_scaler}; use a positive value or null")
        bank = partial(FedEMAClientBank, scaler_target=scaler_target, weight_scaler=weight_scaler)
        super().__init__(*args, bank_factory=bank, **kwargs)
