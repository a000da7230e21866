"""What one client costs: compute and memory measured on its model, traffic from the run's plan.

Measured (on a CPU copy of the client model, in float32, on a fixed all-zero input):

* parameters, and the floating-point values FedAvg averages (parameters + float buffers);
* FLOPs per image counted by :class:`torch.utils.flop_counter.FlopCounterMode` (2 per
  multiply-add of convolutions and matrix products, the ops it registers; norms, activations and
  the weight standardisation are not counted);
* activation memory per image: the distinct tensors autograd saves for backward in the client's
  forward (the input image included, parameters excluded), plus the latent;
* the latent's size per image.

Computed: the bytes a client uploads and downloads (latents, their gradients, FedAvg model
sync) from the step and round structure (docs/design.md, "Units"): in a step,
``clients_per_step`` clients each encode ``client_batch_size`` images; a round is ``sync_every``
steps and ends in FedAvg, where each client of the round uploads its model and downloads the
average; an epoch is ``ceil(train images / server batch)`` steps. Per client means averaged over
all clients.

Units: bytes, FLOPs and values (numel) unless a name says otherwise; ``MB`` is 2**20 bytes, the
unit of the paper's Table 1 (1,856 params x 4 B x 200 syncs = 1.4 MB).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mocosfl.sfl.module import symmetric_mode

MB = 2**20
MFLOPS = 1e6
# The parts of Traffic logged as cost/<part>_mb_per_client_<epoch|run>.
TRAFFIC_PARTS = ("upload", "download", "latents_up", "gradients_down", "model_up", "model_down")


def cut_traffic_per_image(symmetric: bool | str, clients_train: bool = True) -> tuple[int, int]:
    """(latents sent up, gradients sent back) per training image, as MocoSFL.training_step
    exchanges them.

    ``sfl.symmetric=true`` encodes both views with the online and the momentum client (4 latents)
    and gets a gradient for each online one; ``legacy`` and ``off`` one view each (2 and 1).
    Frozen clients (``sfl.client_lr=0``, TAResSFL stage 2) never change, so their online and
    momentum copies are one model: each view's latent goes up once and no gradient comes back.
    """
    if not clients_train:
        return 2, 0
    return (4, 2) if symmetric_mode(symmetric) == "true" else (2, 1)


@dataclass(frozen=True)
class ClientCosts:
    """Measured costs of one client model, per image of shape ``image_shape`` [C, H, W]."""

    params: int  # parameters of the client model
    fedavg_numel: int  # floating-point values FedAvg averages (parameters + float buffers)
    latent_numel: int  # values of one image's latent (e.g. 64 x 32 x 32)
    latent_bytes: int  # one image's latent in memory (float32)
    forward_flops: int  # one forward of one image
    forward_backward_flops: int  # forward + backward (parameter and inner gradients) of one image
    activation_bytes: int  # saved for backward + the latent, one image (see saved_bytes)


def count_flops(client: nn.Module, images: torch.Tensor, backward: bool) -> int:
    """FLOPs of one forward of ``images`` [B, C, H, W] (and of its backward, as a training step
    runs it: the gradient of every parameter, not of the input images)."""
    with FlopCounterMode(display=False) as counter:
        latents = client(images)
        if backward:
            latents.backward(torch.ones_like(latents))
    return int(counter.get_total_flops())


def saved_bytes(client: nn.Module, images: torch.Tensor) -> int:
    """Bytes a forward of ``images`` [B, C, H, W] keeps alive for backward: every distinct
    storage autograd saves (the input images, intermediate maps, norm statistics, derived weights
    such as the standardised ones), parameters excluded, plus the output latent."""
    param_storages = {p.untyped_storage().data_ptr() for p in client.parameters()}
    kept: dict[int, int] = {}  # storage address -> bytes; a tensor saved twice counts once

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in param_storages:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        latents = client(images)
    kept[latents.untyped_storage().data_ptr()] = latents.untyped_storage().nbytes()
    return sum(kept.values())


def measure_client(client: nn.Module, image_shape: tuple[int, ...]) -> ClientCosts:
    """Measure ``client`` ([B, *image_shape] -> [B, *latent]) on a CPU copy in training mode, so
    the model itself (device, mode, gradients, norm statistics) is left as it was.

    ``activation_bytes`` is per image: ``saved_bytes`` of two images minus that of one, which
    drops what a batch keeps once whatever its size (the standardised weights).
    """
    client = copy.deepcopy(client).cpu().float().train().requires_grad_(True)
    # A fixed input: the costs depend on shapes only, and nothing draws from the global RNG.
    one, two = torch.zeros(1, *image_shape), torch.zeros(2, *image_shape)
    with torch.enable_grad():
        forward = count_flops(client, one, backward=False)
        forward_backward = count_flops(client, one, backward=True)
        activation = saved_bytes(client, two) - saved_bytes(client, one)
        latent = client(one)[0]
    return ClientCosts(
        params=sum(p.numel() for p in client.parameters()),
        fedavg_numel=sum(v.numel() for v in client.state_dict().values() if v.is_floating_point()),
        latent_numel=latent.numel(),
        latent_bytes=latent.numel() * latent.element_size(),
        forward_flops=forward,
        forward_backward_flops=forward_backward,
        activation_bytes=activation,
    )


@dataclass(frozen=True)
class StepPlan:
    """How a run's steps use the clients (``sfl.*``; docs/design.md, "Units")."""

    num_clients: int
    clients_per_step: int  # the pool
    client_batch_size: int  # images per client per step
    sync_every: int  # steps in a round, each ending in FedAvg; 0 = no FedAvg
    # round: one pool per round; step: a new pool every step; epoch: one per code epoch of
    # code_epoch_steps steps, whose last step ends a round too (None: not known, so rounds of
    # sync_every only; the sfl config alone does not know it)
    pool: str = "round"
    code_epoch_steps: int | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> StepPlan:
        """From anything with these attributes (``code_epoch_steps`` may be missing): the ``sfl``
        config, the data module."""
        fields = cls.__dataclass_fields__
        return cls(**{name: getattr(settings, name) for name in fields if hasattr(settings, name)})

    def images_per_client(self, steps: float) -> float:
        """Images an average client encodes in ``steps`` steps."""
        return steps * self.clients_per_step * self.client_batch_size / self.num_clients

    @property
    def _epoch_rounds(self) -> bool:
        """Whether code epochs end rounds too (a short one when not a multiple of sync_every)."""
        return self.pool == "epoch" and self.code_epoch_steps is not None

    def syncs_per_epoch(self, steps_per_epoch: int) -> float:
        """FedAvg rounds an epoch holds on average (rounds need not align with epochs)."""
        if not self.sync_every:
            return 0.0
        if self._epoch_rounds:
            per_code_epoch = math.ceil(self.code_epoch_steps / self.sync_every)
            return steps_per_epoch * per_code_epoch / self.code_epoch_steps
        return steps_per_epoch / self.sync_every

    def syncs_in_run(self, total_steps: int) -> int:
        """FedAvg rounds of a whole run: every round, the last one cut short by the end of
        training included (FedAvgCallback also syncs at the end)."""
        if not self.sync_every:
            return 0
        if self._epoch_rounds:
            epochs, rest = divmod(total_steps, self.code_epoch_steps)
            per_code_epoch = math.ceil(self.code_epoch_steps / self.sync_every)
            return epochs * per_code_epoch + math.ceil(rest / self.sync_every)
        return math.ceil(total_steps / self.sync_every)

    def clients_per_sync(self) -> float:
        """Clients that trained since the last FedAvg: the round's pool, or with a new pool every
        step the expected number of distinct clients drawn in ``sync_every`` steps."""
        if self.pool != "step":  # round or epoch: one pool for the whole round
            return float(self.clients_per_step)
        missed = (1 - self.clients_per_step / self.num_clients) ** self.sync_every
        return self.num_clients * (1 - missed)


@dataclass(frozen=True)
class Traffic:
    """Bytes one client sends and receives, averaged over all clients."""

    latents_up: float  # online and momentum latents
    gradients_down: float  # gradients of the online latents
    model_up: float  # its client model (and momentum copy) at FedAvg
    model_down: float  # the average (and the averaged momentum copy)

    @property
    def upload(self) -> float:
        return self.latents_up + self.model_up

    @property
    def download(self) -> float:
        return self.gradients_down + self.model_down

    @property
    def cut_layer(self) -> float:
        """The paper's "Latents" column: what crosses the cut in both directions."""
        return self.latents_up + self.gradients_down

    @property
    def model_sync(self) -> float:
        """The paper's "Weights" column: FedAvg in both directions."""
        return self.model_up + self.model_down

    @property
    def total(self) -> float:
        return self.upload + self.download


def client_traffic(
    *,
    model_numel: int,
    latent_numel: int,
    plan: StepPlan,
    steps: float,
    syncs: float,
    symmetric: bool | str,
    sync_momentum: bool,
    clients_train: bool = True,
    bytes_per_element: int = 4,
) -> Traffic:
    """Traffic of an average client over ``steps`` steps holding ``syncs`` FedAvg rounds.

    ``model_numel``: values of one client model FedAvg exchanges; ``latent_numel``: values of one
    image's latent; ``symmetric``, ``clients_train``: see :func:`cut_traffic_per_image`; a frozen
    client also has nothing to average. ``sync_momentum``: the momentum copy travels too.
    """
    latents, gradients = cut_traffic_per_image(symmetric, clients_train)
    one_latent_per_image = plan.images_per_client(steps) * latent_numel * bytes_per_element
    models = (2 if sync_momentum else 1) if clients_train else 0
    syncs_per_client = syncs * plan.clients_per_sync() / plan.num_clients
    model_bytes = syncs_per_client * model_numel * bytes_per_element * models
    return Traffic(
        latents_up=latents * one_latent_per_image,
        gradients_down=gradients * one_latent_per_image,
        model_up=model_bytes,
        model_down=model_bytes,
    )


@dataclass(frozen=True)
class RunCosts:
    """A run's costs per client: the measured model costs and the traffic of an average client
    per epoch and over the whole run."""

    client: ClientCosts
    symmetric: str
    clients_train: bool
    steps_per_epoch: int
    total_steps: int
    per_epoch: Traffic
    whole_run: Traffic

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    @property
    def training_flops_per_image(self) -> int:
        """Client FLOPs a training image costs in this loss mode: forward + backward for each
        latent that gets a gradient, a forward for each other latent (momentum, or frozen)."""
        latents, online = cut_traffic_per_image(self.symmetric, self.clients_train)
        c = self.client
        return online * c.forward_backward_flops + (latents - online) * c.forward_flops

    @property
    def training_activation_bytes_per_image(self) -> int:
        """Peak client memory a training image holds before the backward: a saved forward for
        each latent that gets a gradient, and each other latent."""
        latents, online = cut_traffic_per_image(self.symmetric, self.clients_train)
        c = self.client
        return online * c.activation_bytes + (latents - online) * c.latent_bytes

    def metrics(self) -> dict[str, float]:
        """Flat ``cost/*`` metrics (MB = 2**20 bytes) for loggers and ``metrics.json``."""
        metrics = {
            "cost/client_params": self.client.params,
            "cost/latent_numel": self.client.latent_numel,
            "cost/client_forward_mflops_per_image": self.client.forward_flops / MFLOPS,
            "cost/client_mflops_per_image": self.training_flops_per_image / MFLOPS,
            "cost/client_activation_mb_per_image": self.training_activation_bytes_per_image / MB,
            "cost/steps_per_epoch": self.steps_per_epoch,
        }
        for span, traffic in (("epoch", self.per_epoch), ("run", self.whole_run)):
            for part in TRAFFIC_PARTS:
                metrics[f"cost/{part}_mb_per_client_{span}"] = getattr(traffic, part) / MB
        return {name: float(value) for name, value in metrics.items()}

    def summary(self) -> dict:
        """Everything, in bytes and FLOPs, for ``overhead.json``."""
        return {
            **asdict(self),
            "epochs": self.epochs,
            "training_flops_per_image": self.training_flops_per_image,
            "training_activation_bytes_per_image": self.training_activation_bytes_per_image,
        }


def run_costs(
    client: nn.Module,
    image_shape: tuple[int, ...],
    plan: StepPlan,
    *,
    steps_per_epoch: int,
    total_steps: int,
    symmetric: bool | str,
    sync_momentum: bool,
    clients_train: bool = True,
    bytes_per_element: int = 4,
) -> RunCosts:
    """Measure ``client`` and work out its traffic per epoch and over ``total_steps`` steps
    (arguments as :func:`client_traffic`)."""
    measured = measure_client(client, image_shape)
    traffic = {
        "model_numel": measured.fedavg_numel,
        "latent_numel": measured.latent_numel,
        "plan": plan,
        "symmetric": symmetric,
        "sync_momentum": sync_momentum,
        "clients_train": clients_train,
        "bytes_per_element": bytes_per_element,
    }
    return RunCosts(
        client=measured,
        symmetric=symmetric_mode(symmetric),
        clients_train=clients_train,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        per_epoch=client_traffic(
            **traffic, steps=steps_per_epoch, syncs=plan.syncs_per_epoch(steps_per_epoch)
        ),
        whole_run=client_traffic(
            **traffic, steps=total_steps, syncs=plan.syncs_in_run(total_steps)
        ),
    )
