"""The baseline measurement: milliseconds per training step of centralized MoCo v2 on the
unsplit network (client part + server part + projection head of one split model) in a plain
PyTorch loop, with the module's settings from ``conf/train.yaml`` (its server optimizer, queue
size, temperature, momentum decay, head and loss mode, ``sfl.loss``) and one optimizer.

It does what MocoSFL's step does minus the split: momentum update, online and momentum passes,
InfoNCE against the queue, one optimizer step, enqueue. Both views go through each branch in one
batched pass, the fastest honest way to run it (exact under GroupNorm). MocoSFL's ``legacy_sum``
loss differs from ``two_way`` only in which latents feed its second term, so the baseline of both
does the work of ``two_way`` (docs/differences.md, row "symmetric loss").
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from torch import nn

from mocosfl.models import ProjectionHead
from mocosfl.sfl import NegativeQueue, info_nce, momentum_copy, update_momentum

from _build import build_split, synchronize


class CentralizedMoCo:
    """MoCo v2 on the unsplit network of ``cfg``, on ``device``; :meth:`step` trains once."""

    def __init__(self, cfg: dict[str, Any], device: torch.device) -> None:
        module = cfg["module"]
        split = build_split(cfg)
        # Built right after the split model, as MocoSFL does, so that the head weights match.
        head = ProjectionHead(split.feature_dim, module["head_hidden_dim"], module["head_out_dim"])
        self.online = nn.Sequential(split.client, split.server, head).to(device)
        self.ema = momentum_copy(self.online)
        self.queue = NegativeQueue(module["queue_size"], module["head_out_dim"]).to(device)
        optimizer = hydra.utils.instantiate(module["server_optimizer"])
        self.optimizer = optimizer(params=self.online.parameters())
        self.temperature, self.ema_decay = module["temperature"], module["ema_decay"]
        self.two_way = module["loss"] != "one_way"
        self.autocast = partial(
            torch.autocast,
            device_type=device.type,
            dtype=torch.bfloat16,
            enabled=cfg["trainer"]["precision"] == "bf16-mixed",
        )

    def step(self, query: torch.Tensor, key: torch.Tensor) -> None:
        """One training step on views [B, 3, S, S]."""
        online, ema = list(self.online.parameters()), list(self.ema.parameters())
        update_momentum(online, ema, self.ema_decay)
        online_in = torch.cat([query, key]) if self.two_way else query
        keys_in = torch.cat([key, query]) if self.two_way else key
        terms = 2 if self.two_way else 1
        with self.autocast():
            queries = F.normalize(self.online(online_in), dim=1).float().chunk(terms)
            with torch.no_grad():
                keys = F.normalize(self.ema(keys_in), dim=1).float().chunk(terms)
        negatives = self.queue.keys
        losses = [info_nce(q, k, negatives, self.temperature)[0] for q, k in zip(queries, keys)]
        loss = sum(losses) / terms
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.queue.enqueue(torch.cat(keys))


def time_centralized(
    cfg: dict[str, Any], query: torch.Tensor, key: torch.Tensor, warmup: int
) -> list[float]:
    """Train on every step of views [steps, B, 3, S, S]; the ms of the steps after ``warmup``."""
    device = query.device
    moco = CentralizedMoCo(cfg, device)
    ms = []
    for step, (q, k) in enumerate(zip(query, key)):
        synchronize(device)
        start = time.perf_counter()
        moco.step(q, k)
        synchronize(device)
        if step >= warmup:
            ms.append((time.perf_counter() - start) * 1e3)
    return ms
