"""TAResSFL (docs/paper.md, "TAResSFL"): a client model trained to resist model inversion.

Stage 1 (:class:`TAResSFL`): one expert client trains MocoSFL on auxiliary plus target images
(:class:`~mocosfl.privacy.data.ExpertDataModule`) against a simulated attacker, a decoder that
learns to maximise the SSIM of its reconstructions from the client's latents of the query views.
Whenever that SSIM exceeds ``target_ssim`` the client also receives the gradient of
``alpha * (SSIM - target_ssim)``: a hinge that pushes the attacker's quality down to the target
and no further. The server learns from the contrastive loss alone.

Stage 2 (:func:`init_from_checkpoint`, the ``init_from`` key of the train config): every client
(and its momentum copy) starts as the expert's client and the server and head as the expert's;
with ``sfl.client_lr=0`` the clients stay frozen while the server trains with many clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from mocosfl.api import load_module
from mocosfl.errors import ConfigError
from mocosfl.models import SplitModel
from mocosfl.privacy.decoder import Decoder
from mocosfl.sfl.module import MocoSFL


def ssim(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Differentiable mean SSIM of [n, 3, S, S] images on [0, 1] (torchmetrics' 11x11 window)."""
    return structural_similarity_index_measure(images, targets, data_range=1.0)


class TAResSFL(MocoSFL):
    """MocoSFL whose clients also receive a simulated attacker's hinge gradient (stage 1).

    Expects batches with ``query_pixels`` [P, b, 3, S, S]: the query views on [0, 1] (as
    :class:`~mocosfl.privacy.data.ExpertDataModule` serves them). The attacker is a
    :class:`Decoder` (``simulator_width`` channels, ``simulator_blocks`` residual blocks) trained
    one Adam step per server step at ``simulator_lr``, times ``simulator_gamma`` at each fraction
    of the step budget in ``simulator_milestones`` (the original's epochs 60, 120, 160 of 200).
    Logs ``taressfl/gan_train_ssim`` (the attacker's SSIM in its step), ``taressfl/gan_ssim``
    (after it) and ``taressfl/penalty_active`` (1 when the hinge fired).
    """

    def __init__(
        self,
        split_model: SplitModel,
        *args: Any,
        image_size: int = 32,
        alpha: float = 2.0,
        target_ssim: float = 0.6,
        simulator_width: int = 64,
        simulator_blocks: int = 4,
        simulator_lr: float = 1e-3,
        simulator_milestones: Sequence[float] = (0.3, 0.6, 0.8),
        simulator_gamma: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(split_model, *args, **kwargs)
        if alpha < 0:
            raise ConfigError(f"module.alpha={alpha}; use 0 (no defence) or more")
        self.alpha = alpha
        self.target_ssim = target_ssim
        self.simulator = Decoder(
            split_model.latent_shape, image_size, simulator_width, simulator_blocks
        )
        self.simulator_lr = simulator_lr
        self.simulator_milestones = tuple(simulator_milestones)
        self.simulator_gamma = simulator_gamma
        self.simulator_optimizer = torch.optim.Adam(self.simulator.parameters(), lr=simulator_lr)
        self._pending_simulator_optimizer: dict | None = None

    # -- checkpoints: the attacker's optimizer is ours, not Lightning's -----------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["simulator_optimizer"] = self.simulator_optimizer.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._pending_simulator_optimizer = checkpoint.get("simulator_optimizer")

    def on_train_start(self) -> None:
        super().on_train_start()
        if self._pending_simulator_optimizer is not None:
            self.simulator_optimizer.load_state_dict(self._pending_simulator_optimizer)
            self._pending_simulator_optimizer = None

    # -- the defence ------------------------------------------------------------------------
    def simulator_lr_at(self, step: int) -> float:
        passed = sum(step >= m * self.total_steps for m in self.simulator_milestones)
        return self.simulator_lr * self.simulator_gamma**passed

    def cut_gradients(
        self, batch: dict[str, Any], client_latents: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Train the attacker one step on the query latents, then add the hinge's gradient to
        the server's for the query latents (the first entry)."""
        pixels = batch["query_pixels"].flatten(0, 1).float()  # [P * b, 3, S, S]
        # Full precision: SSIM's small differences drown in bf16.
        with torch.autocast(self.device.type, enabled=False):
            latents = client_latents[0].detach().float()
            self.simulator.train()
            train_ssim = ssim(self.simulator(latents), pixels)
            for group in self.simulator_optimizer.param_groups:
                group["lr"] = self.simulator_lr_at(self.trainer.global_step)
            self.simulator_optimizer.zero_grad(set_to_none=True)
            (-train_ssim).backward()
            self.simulator_optimizer.step()

            latents.requires_grad_(True)
            attack_ssim = ssim(self.simulator(latents), pixels)
            active = self.alpha > 0 and float(attack_ssim.detach()) > self.target_ssim
            if active:
                penalty = self.alpha * (attack_ssim - self.target_ssim)
                (hinge_grad,) = torch.autograd.grad(penalty, latents)
                grads[0] = grads[0] + hinge_grad.to(grads[0].dtype)
        self.log("taressfl/gan_train_ssim", train_ssim.detach())
        self.log("taressfl/gan_ssim", attack_ssim.detach(), prog_bar=True)
        self.log("taressfl/penalty_active", float(active))
        return grads


@torch.no_grad()
def init_from_checkpoint(
    module: MocoSFL, ckpt_path: str | None, target_fraction: float | None = None
) -> None:
    """TAResSFL stage 2: start ``module`` from a stage-1 checkpoint.

    Every client and every client momentum copy get the checkpoint's FedAvg client model; the
    server, the head and their momentum copies get its server and head (the original starts the
    momentum copies from random weights: docs/differences.md, "TAResSFL momentum copies"). The
    queue and optimizers start fresh.
    With ``target_fraction`` (a Table 4 row) the expert must have been trained with that share
    of the target data.
    """
    if not ckpt_path:
        raise ConfigError(
            "init_from is not set: pass init_from=<stage-1 run>/checkpoints/final.ckpt"
        )
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"init_from={ckpt_path} does not exist; point it at a stage-1 checkpoint")
    expert = load_module(ckpt_path)
    if target_fraction is not None:
        trained_with = (expert.run_config or {}).get("data", {}).get("target_fraction")
        if trained_with is None or abs(trained_with - target_fraction) > 1e-9:
            raise ConfigError(
                f"init_from={ckpt_path} was trained with data.target_fraction={trained_with}, "
                f"this row needs a stage-1 expert with {target_fraction}"
            )
    client = expert.bank.averaged_client().state_dict()
    server, head = expert.server.state_dict(), expert.head.state_dict()
    pairs = [(module.server, server), (module.server_momentum, server)]
    pairs += [(module.head, head), (module.head_momentum, head)]
    try:
        module.bank.load_client(client)
        for target, state in pairs:
            target.load_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        raise ConfigError(
            f"init_from={ckpt_path} does not fit this run's model (use the stage-1 model.* and "
            f"sfl.cut_layer): {str(exc).splitlines()[0]}"
        ) from None
