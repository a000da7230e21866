"""A run's costs per client: the measured client model (:mod:`mocosfl.costs.profile`) and the
traffic of an average client per epoch and over the run (:mod:`mocosfl.costs.traffic`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from mocosfl.costs.profile import ClientCosts, measure_client
from mocosfl.costs.traffic import MB, TRAFFIC_PARTS, Traffic, client_traffic, cut_traffic_per_image
from mocosfl.sfl.loss import loss_mode
from mocosfl.sfl.plan import FederatedPlan

__all__ = ["MFLOPS", "RunCosts", "run_costs"]

MFLOPS = 1e6


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
        c = self.client
        return online * c.forward_backward_flops + (latents - online) * c.forward_flops

    @property
    def training_activation_bytes_per_image(self) -> int:
        """Peak client memory a training image holds before the backward: a saved forward for
        each latent that gets a gradient, and each other latent."""
        latents, online = cut_traffic_per_image(self.loss, self.clients_train)
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
