"""FL-MoCo: federated MoCo v2 (FedAvg of whole MoCo models), the baseline MocoSFL is compared to.

Every client trains the whole network (backbone and projection head), its momentum copy and its
own negative queue on its own images; FedAvg averages the round's clients. It runs on MocoSFL's
clock and data (docs/design.md, "FL-MoCo"): a step is one local optimizer step of every client of
the step's pool, a round is ``sfl.sync_every`` steps ended by the same FedAvg callback.
"""

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from mocosfl.errors import ConfigError, check_all
from mocosfl.models import ProjectionHead, SplitModel
from mocosfl.sfl.engines import make_client_bank
from mocosfl.sfl.loss import contrastive_accuracy, info_nce, loss_mode
from mocosfl.sfl.method import fedavg_weights_of, load_run_state, moco_checks, save_run_state
from mocosfl.sfl.queue import ClientQueues
from mocosfl.sfl.schedules import LRSchedule

# The client schedules that need nothing but the step: the legacy one reads a period that only
# MocoSFL's split run defines.
SCHEDULES = ("cosine_step", "cosine_epoch", "constant")


class StepClock(torch.optim.Optimizer):
    """The optimizer Lightning holds for FL-MoCo; its step changes nothing.

    Under manual optimization ``trainer.global_step`` counts the steps of the module's Lightning
    optimizers, and FL-MoCo's real optimizers are the bank's, one per client: stepping this
    clock once per training step makes ``global_step`` count steps, as for MocoSFL.
    """

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        super().__init__(params, {})

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return closure() if closure is not None else None


class FLMoCo(L.LightningModule):
    """FedAvg of MoCo v2: each client a whole MoCo model with its own queue.

    A :class:`~mocosfl.sfl.loop_clients.LoopClientBank` holds the clients, its "client model"
    being the whole network ``client -> server -> head`` of ``split_model`` plus the projection
    head, so FedAvg (data-size weights, the ``participated`` mask) and the checkpoint rows are
    MocoSFL's. A training batch is one federated step from ``FederatedDataModule``::

        {"query": [P, b, C, H, W], "key": [P, b, C, H, W], "client_ids": [P], "step": int}

    and each of the ``P`` clients takes one local step on its own ``b`` images against its own
    queue (``queues``: [N, K, D] with a pointer per client).
    """

    def __init__(
        self,
        split_model: SplitModel,
        num_clients: int,
        client_optimizer: Callable[..., torch.optim.Optimizer],
        client_sizes: Sequence[int] | None = None,
        fedavg_weights: str = "data",
        queue_size: int = 6000,
        temperature: float = 0.1,
        ema_decay: float = 0.99,
        loss: str = "two_way",
        head_hidden_dim: int = 1024,
        head_out_dim: int = 1024,
        client_schedule: str = "cosine_step",
        client_engine: str = "loop",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        weights = fedavg_weights_of(fedavg_weights, client_sizes)
        checks = [
            *moco_checks(num_clients, queue_size, temperature, ema_decay),
            (
                loss != "legacy_sum",
                "sfl.loss=legacy_sum is MocoSFL's split quirk; module=flmoco takes two_way or "
                "one_way",
            ),
            (
                client_schedule in SCHEDULES,
                f"sfl.client_schedule={client_schedule!r}; module=flmoco takes one of "
                f"{', '.join(SCHEDULES)}",
            ),
            (
                client_engine == "loop",
                f"sfl.client_engine={client_engine!r}; module=flmoco runs the loop engine",
            ),
        ]
        check_all(checks)
        self.loss_mode = loss_mode(loss)
        self.temperature = temperature
        head = ProjectionHead(split_model.feature_dim, head_hidden_dim, head_out_dim)
        model = nn.Sequential(
            OrderedDict(client=split_model.client, server=split_model.server, head=head)
        )
        self.bank = make_client_bank(
            client_engine, model, num_clients, client_optimizer, ema_decay, weights=weights
        )
        self.queues = ClientQueues(num_clients, queue_size, head_out_dim)
        self.client_schedule = LRSchedule(client_schedule)
        # As MocoSFL's: the resolved run config and its linked source, set by the entry point.
        self.run_config: dict[str, Any] | None = None
        self.run_source: dict[str, Any] | None = None
        self._pending_client_optimizers: list[dict] | None = None
        self._code_epoch_steps: int | None = None  # the data module's, set in setup()

    # -- Lightning plumbing -----------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return StepClock(self.bank.online.parameters())

    def setup(self, stage: str) -> None:
        """Refuse several processes (the clients' state is not exchanged) and take the original's
        epoch for ``cosine_epoch`` from the data module's plan."""
        if self.trainer.world_size > 1:
            raise ConfigError("module=flmoco runs on one process; set trainer.devices=1")
        plan = getattr(self.trainer.datamodule, "plan", None)
        self._code_epoch_steps = None if plan is None else plan.code_epoch_steps

    def on_train_start(self) -> None:
        # After the strategy moved the module, so restored SGD buffers land by their parameters.
        if self._pending_client_optimizers is not None:
            self.bank.load_optimizer_state(self._pending_client_optimizers)
            self._pending_client_optimizers = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_run_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_client_optimizers = load_run_state(checkpoint)

    def client_lr(self, step: int) -> float:
        """Every client's learning rate at step ``step`` (the schedule is the same for all)."""
        steps = int(self.trainer.estimated_stepping_batches)
        epoch = self._code_epoch_steps or max(1, int(self.trainer.num_training_batches))
        return self.bank.base_lr * self.client_schedule.factor(step, steps, epoch)

    # -- the algorithm ----------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One local step of every pool client on its own views ``query``/``key`` [P, b, C, H, W];
        returns the pool's mean loss []."""
        ids = batch["client_ids"].tolist()
        views = [(batch["query"], batch["key"])]
        if self.loss_mode == "two_way":
            views.append((batch["key"], batch["query"]))
        pool = len(ids)

        self.bank.update_momentum(ids)
        # Each client's negatives as they were before this step's keys: [P, K, D].
        negatives = self.queues.keys[ids]
        queries, keys = [], []
        for online_images, key_images in views:
            q = F.normalize(self.bank.encode(ids, online_images), dim=1)
            k = F.normalize(self.bank.encode_momentum(ids, key_images), dim=1)
            # The loss in the queue's precision (float32 under bf16 autocast).
            queries.append(q.to(negatives.dtype).unflatten(0, (pool, -1)))
            keys.append(k.to(negatives.dtype).unflatten(0, (pool, -1)))
        terms = [
            [info_nce(q[i], k[i], negatives[i], self.temperature) for i in range(pool)]
            for q, k in zip(queries, keys)
        ]
        # Client i's loss is the mean of its view terms; the clients' graphs are disjoint, so
        # one backward of their sum gives each client the gradient of its own loss.
        client_losses = torch.stack(
            [sum(view[i][0] for view in terms) / len(terms) for i in range(pool)]
        )
        self.manual_backward(client_losses.sum())
        lr = self.client_lr(self.trainer.global_step)
        self.bank.step(ids, lambda c: lr)
        self.optimizers().step()  # the clock: global_step counts this step
        for i, c in enumerate(ids):
            self.queues.enqueue(c, torch.cat([k[i] for k in keys]))

        loss = client_losses.mean().detach()
        logits = torch.cat([t[1] for t in terms[0]]).detach()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/contrastive_acc", contrastive_accuracy(logits), prog_bar=True)
        self.log("train/feature_std", queries[0].detach().float().flatten(0, 1).std(0).mean())
        self.log("lr/client", lr)
        return loss

    # -- evaluation hooks -------------------------------------------------------------------
    @torch.no_grad()
    def encoder(self, feature: str = "backbone") -> nn.Module:
        """A frozen, eval-mode copy of the averaged model (what a FedAvg now would give).

        ``feature="backbone"`` ends at the pooled backbone feature [B, feature_dim];
        ``"head"`` adds the projection head [B, head_out_dim].
        """
        if feature not in ("backbone", "head"):
            raise ConfigError(f"feature={feature!r}: choose backbone or head")
        model = self.bank.averaged_client()
        parts = [model.client, model.server, *([model.head] if feature == "head" else [])]
        return nn.Sequential(*parts).eval().requires_grad_(False)
