"""A run's costs per client: the measured client model (:mod:`mocosfl.costs.profile`) and the
traffic of an average client per epoch and over the run (:mod:`mocosfl.costs.traffic`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from mocosfl.costs.profile import ClientCosts, measure_client
from mocosfl.costs.traffic import MB, TRAFFIC_PARTS, Traffic, client_traffic, cut_traffic_per_image
from mocosfl.sfl.loss import loss_mode
from mocosfl.sfl.plan import FederatedPlan

__all__ = [
    "MFLOPS",
    "RunCosts",
    "cost_metrics",
    "run_costs",
    "training_activation_bytes",
    "training_flops",
]

MFLOPS = 1e6


def training_flops(
    trained: ClientCosts, trained_passes: int, forward_only: ClientCosts, forward_passes: int
) -> int:
    """Client FLOPs of a training image: forward + backward of ``trained`` for each of its
    ``trained_passes`` (the outputs that get a gradient), a forward of ``forward_only`` for each
    of ``forward_passes`` (momentum copy, or frozen client)."""
    return (
        trained_passes * trained.forward_backward_flops
        + forward_passes * forward_only.forward_flops
    )


def training_activation_bytes(
    trained: ClientCosts, trained_passes: int, forward_only: ClientCosts, forward_passes: int
) -> int:
    """Peak client memory a training image holds before the backward: a saved forward of
    ``trained`` for each of its passes, and the output of each forward-only pass."""
    return trained_passes * trained.activation_bytes + forward_passes * forward_only.latent_bytes


def cost_metrics(
    *,
    client: ClientCosts,
    latent_numel: int,
    training_flops: int,
    activation_bytes: int,
    steps_per_epoch: int,
    per_epoch: Traffic,
    whole_run: Traffic,
) -> dict[str, float]:
    """The flat ``cost/*`` metrics (MB = 2**20 bytes) of a measured ``client`` (the model a
    client trains), ``latent_numel`` values crossing a cut an image, a training image's FLOPs
    and activation bytes, and the traffic per epoch and over the run."""
    metrics = {
        "cost/client_params": client.params,
        "cost/latent_numel": latent_numel,
        "cost/client_forward_mflops_per_image": client.forward_flops / MFLOPS,
        "cost/client_mflops_per_image": training_flops / MFLOPS,
        "cost/client_activation_mb_per_image": activation_bytes / MB,
        "cost/steps_per_epoch": steps_per_epoch,
    }
    for span, traffic in (("epoch", per_epoch), ("run", whole_run)):
        for part in TRAFFIC_PARTS:
            metrics[f"cost/{part}_mb_per_client_{span}"] = getattr(traffic, part) / MB
    return {name: float(value) for name, value in metrics.items()}


@dataclass(frozen=True)
class RunCosts:
    """A run's costs per client: the measured model costs and the traffic of an average client
    per epoch and over the whole run."""

    client: ClientCosts
    loss: str
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
        latents, online = cut_traffic_per_image(self.loss, self.clients_train)
        return training_flops(self.client, online, self.client, latents - online)

    @property
    def training_activation_bytes_per_image(self) -> int:
        """Peak client memory a training image holds before the backward: a saved forward for
        each latent that gets a gradient, and each other latent."""
        latents, online = cut_traffic_per_image(self.loss, self.clients_train)
        return training_activation_bytes(self.client, online, self.client, latents - online)

    def metrics(self) -> dict[str, float]:
        """Flat ``cost/*`` metrics (MB = 2**20 bytes) for loggers and ``metrics.json``."""
        return cost_metrics(
            client=self.client,
            latent_numel=self.client.latent_numel,
            training_flops=self.training_flops_per_image,
            activation_bytes=self.training_activation_bytes_per_image,
            steps_per_epoch=self.steps_per_epoch,
            per_epoch=self.per_epoch,
            whole_run=self.whole_run,
        )

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
    plan: FederatedPlan,
    *,
    steps_per_epoch: int,
    total_steps: int,
    loss: str,
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
        "loss": loss,
        "sync_momentum": sync_momentum,
        "clients_train": clients_train,
        "bytes_per_element": bytes_per_element,
    }
    return RunCosts(
        client=measured,
        loss=loss_mode(loss),
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
