"""FL-MoCo: federated MoCo v2 (FedAvg of whole MoCo models), the baseline MocoSFL is compared to.

Every client trains the whole network (backbone and projection head), its momentum copy and its
own negative queue on its own images; FedAvg averages the round's clients, on MocoSFL's clock
and data (:mod:`mocosfl.flssl.base`; docs/design.md, "FL-MoCo").
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mocosfl.flssl.base import FLSSLMethod, whole_network
from mocosfl.models import ProjectionHead, SplitModel
from mocosfl.sfl.ddp import gather_pool, share_pool
from mocosfl.sfl.engines import make_client_bank
from mocosfl.sfl.loss import contrastive_accuracy, info_nce
from mocosfl.sfl.method import fedavg_weights_of, moco_checks
from mocosfl.sfl.queue import ClientQueues


class FLMoCo(FLSSLMethod):
    """FedAvg of MoCo v2: each client a whole MoCo model with its own queue.

    A :class:`~mocosfl.sfl.loop_clients.LoopClientBank` holds the clients, its "client model"
    being the whole network ``client -> server -> head`` of ``split_model`` plus the projection
    head, so FedAvg (data-size weights, the ``participated`` mask) and the checkpoint rows are
    MocoSFL's. A training batch is one federated step from ``FederatedDataModule``::

        {"query": [P, b, C, H, W], "key": [P, b, C, H, W], "client_ids": [P], "step": int}

    and each of the ``P`` clients takes one local step on its own ``b`` images against its own
    queue (``queues``: [N, K, D] with a pointer per client).
    """

    method = "flmoco"

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
        checks = moco_checks(num_clients, queue_size, temperature, ema_decay)
        super().__init__(checks, loss, client_schedule, client_engine)
        weights = fedavg_weights_of(fedavg_weights, client_sizes)
        self.temperature = temperature
        head = ProjectionHead(split_model.feature_dim, head_hidden_dim, head_out_dim)
        model = whole_network(split_model, head)
        self.bank = make_client_bank(
            client_engine, model, num_clients, client_optimizer, ema_decay, weights=weights
        )
        self.queues = ClientQueues(num_clients, queue_size, head_out_dim)

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
        # Several processes: each trained its share of the pool; now every one gets the whole
        # pool's clients and their keys [P, views * b, D], each client's into its own queue.
        pool = share_pool(self, batch)
        for c, client_keys in zip(pool, gather_pool(self, torch.cat(keys, dim=1))):
            self.queues.enqueue(c, client_keys)

        loss = client_losses.mean().detach()
        logits = torch.cat([t[1] for t in terms[0]]).detach()
        # Means over the processes' equal shares: the whole pool's loss and accuracy.
        sync = self.trainer.world_size > 1
        self.log("train/loss", loss, prog_bar=True, sync_dist=sync)
        accuracy = contrastive_accuracy(logits)
        self.log("train/contrastive_acc", accuracy, prog_bar=True, sync_dist=sync)
        feature_std = queries[0].detach().float().flatten(0, 1).std(0).mean()
        self.log("train/feature_std", feature_std, sync_dist=sync)
        self.log("lr/client", lr)
        return loss
