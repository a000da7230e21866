"""The bytes a client uploads and downloads: latents, their gradients and the FedAvg model sync,
from the run's :class:`~mocosfl.sfl.plan.FederatedPlan` (docs/design.md, "Units"). In a step,
``clients_per_step`` clients each encode ``client_batch_size`` images; each round ends in FedAvg,
where each client of the round uploads its model and downloads the average. Per client means
averaged over all clients.

Units: bytes and values (numel); ``MB`` is 2**20 bytes, the unit of the paper's Table 1 (1,856
params x 4 B x 200 syncs = 1.4 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

from mocosfl.sfl.loss import loss_mode
from mocosfl.sfl.plan import FederatedPlan

__all__ = [
    "MB",
    "TRAFFIC_PARTS",
    "Traffic",
    "client_traffic",
    "cut_traffic_per_image",
    "model_sync_bytes",
]

MB = 2**20
# The parts of Traffic logged as cost/<part>_mb_per_client_<epoch|run>.
TRAFFIC_PARTS = ("upload", "download", "latents_up", "gradients_down", "model_up", "model_down")


def cut_traffic_per_image(loss: str, clients_train: bool = True) -> tuple[int, int]:
    """(latents sent up, gradients sent back) per training image, as MocoSFL.training_step
    exchanges them.

    ``sfl.loss=two_way`` encodes both views with the online and the momentum client (4 latents)
    and gets a gradient for each online one; ``legacy_sum`` and ``one_way`` one view each (2 and
    1).
    Frozen clients (``sfl.client_lr=0``, TAResSFL stage 2) never change, so their online and
    momentum copies are one model: each view's latent goes up once and no gradient comes back.
    """
    if not clients_train:
        return 2, 0
    return (4, 2) if loss_mode(loss) == "two_way" else (2, 1)


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


def model_sync_bytes(
    plan: FederatedPlan, syncs: float, model_numel: float, bytes_per_element: int = 4
) -> float:
    """Bytes an average client uploads (and, the average, downloads) over ``syncs`` FedAvg
    rounds, ``model_numel`` values each time it is in a round."""
    syncs_per_client = syncs * plan.clients_per_sync() / plan.num_clients
    return syncs_per_client * model_numel * bytes_per_element


def client_traffic(
    *,
    model_numel: int,
    latent_numel: int,
    plan: FederatedPlan,
    steps: float,
    syncs: float,
    loss: str,
    sync_momentum: bool,
    clients_train: bool = True,
    bytes_per_element: int = 4,
) -> Traffic:
    """Traffic of an average client over ``steps`` steps holding ``syncs`` FedAvg rounds.

    ``model_numel``: values of one client model FedAvg exchanges; ``latent_numel``: values of one
    image's latent; ``loss``, ``clients_train``: see :func:`cut_traffic_per_image`; a frozen
    client also has nothing to average. ``sync_momentum``: the momentum copy travels too.
    """
    latents, gradients = cut_traffic_per_image(loss, clients_train)
    one_latent_per_image = plan.images_per_client(steps) * latent_numel * bytes_per_element
    models = (2 if sync_momentum else 1) if clients_train else 0
    model_bytes = model_sync_bytes(plan, syncs, model_numel, bytes_per_element) * models
    return Traffic(
        latents_up=latents * one_latent_per_image,
        gradients_down=gradients * one_latent_per_image,
        model_up=model_bytes,
        model_down=model_bytes,
    )
