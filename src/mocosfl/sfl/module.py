"""MocoSFL as one LightningModule: the server, its momentum copy and queue, and the clients.

Over 300 lines on purpose: a method is one file (its hooks, checkpoint state and training step
read together); the pieces that stand alone are modules of their own (``loss``, ``queue``,
``momentum``, ``schedules``, the client banks).
"""

import copy
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from mocosfl.errors import ConfigError, check_all
from mocosfl.models import ProjectionHead, SplitModel
from mocosfl.sfl.ddp import gather_pool, share_pool
from mocosfl.sfl.engines import make_client_bank
from mocosfl.sfl.loss import contrastive_accuracy, info_nce, loss_mode
from mocosfl.sfl.method import ClientRunState, fedavg_weights_of, moco_checks
from mocosfl.sfl.momentum import momentum_copy, update_momentum
from mocosfl.sfl.queue import NegativeQueue
from mocosfl.sfl.schedules import LRSchedule, legacy_client_period

# Collapse: the batch's normalised features (nearly) all the same, i.e. their total variance
# (1 - |mean|^2 for unit vectors) near 0. A spread is no test of health: the head output of
# trained `make demo` networks measured anywhere from 4e-3 to 0.2, so the alarm waits for 1e-5,
# float noise around one point.
COLLAPSE_VARIANCE = 1e-5
COLLAPSE_CHECK_EVERY = 50  # steps between two collapse checks (after the first epoch)


class MocoSFL(ClientRunState, L.LightningModule):
    """Split-federated MoCo v2 (Li et al., ICLR 2023).

    The server holds the rest of the backbone, the projection head, their momentum copies and
    one negative-key queue shared by all clients; a :class:`~mocosfl.sfl.clients.ClientBank`
    (``client_engine`` loop | vmap) holds the clients.
    A training batch is one federated step from ``FederatedDataModule``::

        {"query": [P, b, C, H, W], "key": [P, b, C, H, W], "client_ids": [P], "step": int}

    ``trainer.global_step`` counts server steps: the client optimizers belong to the bank.
    What the legacy schedules take from the run comes from the data module (:meth:`setup`).
    """

    def __init__(
        self,
        split_model: SplitModel,
        num_clients: int,
        server_optimizer: Callable[..., torch.optim.Optimizer],
        client_optimizer: Callable[..., torch.optim.Optimizer],
        client_sizes: Sequence[int] | None = None,
        fedavg_weights: str = "data",
        queue_size: int = 6000,
        temperature: float = 0.1,
        ema_decay: float = 0.99,
        loss: str = "two_way",
        head_hidden_dim: int = 1024,
        head_out_dim: int = 1024,
        server_schedule: str = "cosine_step",
        client_schedule: str = "cosine_step",
        legacy_client_period: int | None = None,
        client_engine: str = "loop",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        weights = fedavg_weights_of(fedavg_weights, client_sizes)
        # Checked here too (not only from the config) since the module can be built from Python.
        schedules = ", ".join(LRSchedule.KINDS)
        checks = [
            *moco_checks(num_clients, queue_size, temperature, ema_decay),
            (
                server_schedule in LRSchedule.KINDS,
                f"sfl.server_schedule={server_schedule!r}; use one of {schedules}",
            ),
            (
                client_schedule in LRSchedule.KINDS,
                f"sfl.client_schedule={client_schedule!r}; use one of {schedules}",
            ),
            (
                legacy_client_period is None or legacy_client_period >= 1,
                f"sfl.legacy_client_period={legacy_client_period}; use at least 1, or null for "
                "the original's",
            ),
        ]
        check_all(checks)
        self.loss_mode = loss_mode(loss)
        self.temperature = temperature
        self.ema_decay = ema_decay
        self.cut_layer = split_model.cut_layer
        self.feature_dim = split_model.feature_dim
        self.server = split_model.server
        self.head = ProjectionHead(split_model.feature_dim, head_hidden_dim, head_out_dim)
        self.server_momentum = momentum_copy(self.server)
        self.head_momentum = momentum_copy(self.head)
        self.queue = NegativeQueue(queue_size, head_out_dim)
        self.bank = make_client_bank(
            client_engine,
            split_model.client,
            num_clients,
            client_optimizer,
            ema_decay,
            weights=weights,
        )
        self.server_optimizer_factory = server_optimizer
        self.server_schedule = LRSchedule(server_schedule)
        self.client_schedule = LRSchedule(client_schedule, legacy_client_period)
        # The resolved run config, stored in every checkpoint so that a checkpoint alone can
        # rebuild its model and data (set by the entry point).
        self.run_config: dict[str, Any] | None = None
        # The same with its links between settings kept, for a resume (mocosfl.utils.resume).
        self.run_source: dict[str, Any] | None = None
        # Under DDP only the server's and head's gradients are all-reduced: the clients' state
        # is exchanged by ClientBank.share_pool, and the momentum copies and the queue are the
        # same on every process by construction.
        self._ddp_params_and_buffers_to_ignore = [
            name
            for name, _ in [*self.named_parameters(), *self.named_buffers()]
            if name.split(".")[0] in ("bank", "queue", "server_momentum", "head_momentum")
        ]
        self._collapse_warned = False
        self._code_epoch_steps: int | None = None  # the data module's, set in setup()

    # -- Lightning plumbing -----------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.server.parameters()) + list(self.head.parameters())
        return self.server_optimizer_factory(params=params)

    @property
    def total_steps(self) -> int:
        """The step budget the cosine schedules run over."""
        return int(self.trainer.estimated_stepping_batches)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, int(self.trainer.num_training_batches))

    @property
    def code_epoch_steps(self) -> int:
        """The epoch of ``cosine_epoch`` schedules: the original's (see :meth:`setup`)."""
        return self._code_epoch_steps or self.steps_per_epoch

    def setup(self, stage: str) -> None:
        """Take from the data module's :class:`~mocosfl.sfl.plan.FederatedPlan` what the legacy
        schedules derive from the run (docs/differences.md, "legacy schedules"): the original's
        epoch, one pass over client 0's data, for ``cosine_epoch`` (Lightning's epoch without
        one), and the client cosine's period when ``legacy_client_period`` is None
        (:func:`~mocosfl.sfl.schedules.legacy_client_period`)."""
        plan = getattr(self.trainer.datamodule, "plan", None)
        self._code_epoch_steps = None if plan is None else plan.code_epoch_steps
        schedule = self.client_schedule
        if schedule.per_client and schedule.legacy_period is None:
            if plan is None:
                raise ConfigError(
                    "sfl.legacy_client_period=null takes the pool size from the run's plan; "
                    "set sfl.legacy_client_period when training without a FederatedDataModule"
                )
            schedule.legacy_period = legacy_client_period(
                self.bank.num_clients, plan.clients_per_step
            )

    def learning_rates(self, step: int) -> tuple[float, Callable[[int], float]]:
        """(server lr, client c -> lr) at server step ``step``."""
        base = self.optimizers().optimizer.defaults["lr"]
        server = base * self.server_schedule.factor(step, self.total_steps, self.code_epoch_steps)
        client_base = self.bank.base_lr
        # Only the legacy schedule reads each client's own step count: copying every client's
        # count to the host each step would cost a device sync for nothing.
        steps = self.bank.steps.tolist() if self.client_schedule.per_client else None

        def client_lr(c: int) -> float:
            own_steps = steps[c] if steps is not None else 0
            factor = self.client_schedule.factor(
                step, self.total_steps, self.code_epoch_steps, own_steps=own_steps
            )
            return client_base * factor

        return server, client_lr

    # -- the algorithm ----------------------------------------------------------------------
    def server_forward(self, latents: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        """Normalised projections [n, D] of client latents [n, *latent]."""
        server, head = (
            (self.server_momentum, self.head_momentum) if momentum else (self.server, self.head)
        )
        return F.normalize(head(server(latents)), dim=1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        two_way = self.loss_mode == "two_way"
        # Clients: the pool's latents (remote clients that did not answer are left out).
        ids, latents = self.bank.encode_pool(batch, two_way)
        # Running totals (they survive sparse logging): remote clients left out, bytes, time.
        for name, value in self.bank.run_stats().items():
            self.log(name, value)
        if not ids:
            return None  # nobody answered: the step is skipped
        query_latents, key_latents = latents["query"], latents["key"]
        if two_way:
            query_latents_swapped, key_latents_swapped = (
                latents["query_swapped"],
                latents["key_swapped"],
            )

        # What crosses the cut: online inputs, their momentum keys' inputs, and which online
        # inputs carry the clients' gradients
        if two_way:
            online_in = [query_latents, query_latents_swapped]
            keys_in = [key_latents, key_latents_swapped]
            with_client_grad = online_in
        elif self.loss_mode == "legacy_sum":
            # The original's sum kept on purpose (docs/differences.md, "symmetric loss"): the
            # second term feeds the momentum clients' latents to the online server, so the
            # clients only learn from the first term.
            online_in = [query_latents, key_latents]
            keys_in = [key_latents, query_latents]
            with_client_grad = [query_latents]
        else:
            online_in, keys_in, with_client_grad = [query_latents], [key_latents], [query_latents]

        # Server: momentum copy first, then one online pass over every term (GroupNorm is
        # per sample, so batching the terms is exact).
        update_momentum(
            list(self.server.parameters()) + list(self.head.parameters()),
            list(self.server_momentum.parameters()) + list(self.head_momentum.parameters()),
            self.ema_decay,
        )
        server_in = torch.cat([z.detach() for z in online_in]).requires_grad_(True)
        queries = self.server_forward(server_in).chunk(len(online_in))
        with torch.no_grad():
            keys = self.server_forward(torch.cat([z.detach() for z in keys_in]), momentum=True)
        # The loss in the queue's precision (float32 under bf16 autocast).
        negatives = self.queue.keys
        keys = keys.to(negatives.dtype).chunk(len(keys_in))
        terms = [
            info_nce(q.to(negatives.dtype), k, negatives, self.temperature)
            for q, k in zip(queries, keys)
        ]
        losses = [t[0] for t in terms]
        loss = sum(losses) if self.loss_mode == "legacy_sum" else sum(losses) / len(losses)

        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        # The gradient at the cut goes back to the clients, each its own slice. With several
        # processes each loss is the mean over its share of the pool; DDP averages the server's
        # gradients over the processes, and this scaling does the same for the clients'.
        world = self.trainer.world_size
        grads = server_in.grad.chunk(len(online_in))[: len(with_client_grad)]
        grads = self.cut_gradients(batch, with_client_grad, [g / world for g in grads])
        torch.autograd.backward(with_client_grad, grads)

        server_lr, client_lr = self.learning_rates(self.trainer.global_step)
        for group in optimizer.param_groups:
            group["lr"] = server_lr
        optimizer.step()
        self.bank.step(ids, client_lr)
        share_pool(self, batch)  # several processes: every one gets the whole pool's clients
        keys = [gather_pool(self, k) for k in keys]  # the whole pool's, in pool order
        if self.loss_mode == "legacy_sum":
            # The original enqueues the query view's keys first (docs/differences.md, "enqueue
            # order"); it matters when the queue's end cuts a step's keys in two.
            keys = keys[::-1]
        self.queue.enqueue(torch.cat(keys))

        self.log_step(loss, terms[0][1], queries[0], server_lr, sum(map(client_lr, ids)) / len(ids))
        return loss.detach()

    def cut_gradients(
        self, batch: dict[str, Any], client_latents: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The gradients sent back through the clients, one per tensor of ``client_latents``
        (online latents [P * b, *latent], the query views' first). A hook for defences that add
        a client-side term (TAResSFL); by default the server's gradients, unchanged."""
        return grads

    def log_step(
        self,
        loss: torch.Tensor,
        logits: torch.Tensor,
        queries: torch.Tensor,
        server_lr: float,
        client_lr: float,
    ) -> None:
        feature_std = queries.detach().float().std(dim=0).mean()
        # Means over the processes' equal shares: the loss of the whole pool.
        sync = self.trainer.world_size > 1
        self.log("train/loss", loss.detach(), prog_bar=True, sync_dist=sync)
        accuracy = contrastive_accuracy(logits.detach())
        self.log("train/contrastive_acc", accuracy, prog_bar=True, sync_dist=sync)
        self.log("train/feature_std", feature_std, sync_dist=sync)
        self.log("lr/server", server_lr)
        self.log("lr/client", client_lr)
        step = self.trainer.global_step
        if self._collapse_warned or step < self.steps_per_epoch or step % COLLAPSE_CHECK_EVERY:
            return  # read on the host only now and then: each read waits for the device
        variance = float(queries.detach().float().var(dim=0, unbiased=False).sum())
        if variance < COLLAPSE_VARIANCE:
            self._collapse_warned = True
            rank_zero_warn(
                f"the features have collapsed: the batch's projections are all the same (total "
                f"variance {variance:.1e}); lower sfl.lr or check the data"
            )

    # -- evaluation hooks -------------------------------------------------------------------
    @torch.no_grad()
    def encoder(self, feature: str = "backbone") -> nn.Module:
        """A frozen, eval-mode copy of the full network: averaged client model, then the server.

        ``feature="backbone"`` ends at the pooled backbone feature [B, feature_dim];
        ``"head"`` adds the projection head [B, head_out_dim] (the original's kNN feature).
        """
        if feature not in ("backbone", "head"):
            raise ConfigError(f"feature={feature!r}: choose backbone or head")
        parts = [self.bank.averaged_client(), copy.deepcopy(self.server)]
        if feature == "head":
            parts.append(copy.deepcopy(self.head))
        return nn.Sequential(*parts).eval().requires_grad_(False)
