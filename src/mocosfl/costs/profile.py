"""What one client model costs, measured on a CPU copy in float32 on a fixed all-zero input.

* parameters, and the floating-point values FedAvg averages (parameters + float buffers);
* FLOPs per image counted by :class:`torch.utils.flop_counter.FlopCounterMode` (2 per
  multiply-add of convolutions and matrix products, the ops it registers; norms, activations and
  the weight standardisation are not counted);
* activation memory per image: the distinct tensors autograd saves for backward in the client's
  forward (the input image included, parameters excluded), plus the latent;
* the latent's size per image.

Units: bytes, FLOPs and values (numel) unless a name says otherwise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ClientCosts", "count_flops", "fedavg_numel", "measure_client", "saved_bytes"]


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


def fedavg_numel(model: nn.Module) -> int:
    """Floating-point values FedAvg averages in ``model``: its parameters and float buffers (the
    floating entries of its state dict, as ``ClientBank.average`` takes them)."""
    return sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())


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

    ``activation_bytes`` is per image: ``saved_bytes`` of four images minus that of two, halved,
    which drops what a batch keeps once whatever its size (the standardised weights). Batches of
    two and more, so that BatchNorm over features (BYOL's heads) trains; the FLOPs are linear in
    the batch.
    """
    client = copy.deepcopy(client).cpu().float().train().requires_grad_(True)
    # A fixed input: the costs depend on shapes only, and nothing draws from the global RNG.
    two, four = torch.zeros(2, *image_shape), torch.zeros(4, *image_shape)
    with torch.enable_grad():
        forward = count_flops(client, two, backward=False) // 2
        forward_backward = count_flops(client, two, backward=True) // 2
        activation = (saved_bytes(client, four) - saved_bytes(client, two)) // 2
        latent = client(two)[0]
    return ClientCosts(
        params=sum(p.numel() for p in client.parameters()),
        fedavg_numel=fedavg_numel(client),
        latent_numel=latent.numel(),
        latent_bytes=latent.numel() * latent.element_size(),
        forward_flops=forward,
        forward_backward_flops=forward_backward,
        activation_bytes=activation,
    )
