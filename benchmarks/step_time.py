"""Milliseconds per training step: MocoSFL with 1, 10, 100 clients against centralized MoCo.

Every engine trains the same network (client part + server part + projection head, built from
one seed) on the same random images at the same server batch, one after the other in this
process, so the ratios compare like with like:

* ``mocosfl``: the real :class:`mocosfl.sfl.MocoSFL` module driven by a Lightning ``Trainer``
  (so Lightning's per-step overhead is included), N clients of ``server_batch // N`` images.
  FedAvg runs once per round, not per step, and is not timed.
* ``centralized``: MoCo v2 on the unsplit network in a plain PyTorch loop: one SGD optimizer, a
  momentum copy, the same queue size, temperature and symmetric-loss setting.

Run: ``python benchmarks/step_time.py`` (``--help`` lists the options; ``--paper`` is the
paper's full ResNet-18). Results are printed as a table and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mocosfl.models import ProjectionHead, SplitModel, build_split_model
from mocosfl.sfl import MocoSFL, NegativeQueue, info_nce, momentum_copy, update_momentum

# Training settings of conf/sfl/default.yaml and conf/model/resnet18.yaml, so the step does
# the work a real run does.
LR, SGD_MOMENTUM, WEIGHT_DECAY = 0.06, 0.9, 5e-4
TEMPERATURE, EMA_DECAY = 0.1, 0.99
HEAD_HIDDEN_DIM, HEAD_OUT_DIM = 1024, 1024
SEED = 0
DEFAULT_JSON = Path(__file__).parent / "results" / "step_time.json"


@dataclass
class Result:
    """Timings of one engine; ``ms`` holds every timed step (warmup excluded)."""

    engine: str
    clients: int | None
    client_batch: int
    ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.ms)


# -- command line ------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate the options; ``--paper`` overrides width, server batch and threads."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--width", type=int, default=16, help="base channels (64 = paper)")
    parser.add_argument("--cut-layer", type=int, default=1, help="1 = stem only (MocoSFL-1)")
    parser.add_argument("--server-batch", type=int, default=100, help="images per server step")
    parser.add_argument("--clients", default="1,10,100", help="comma-separated client counts")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per engine")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--symmetric", choices=("true", "legacy", "off"), default="true")
    parser.add_argument("--norm", choices=("gn", "bn"), default="gn")
    parser.add_argument("--queue-size", type=int, default=6000)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the paper's ResNet-18: width 64, server batch 100, 1 thread (overrides those)",
    )
    args = parser.parse_args(argv)
    if args.paper:
        args.width, args.server_batch, args.threads = 64, 100, 1
    try:
        args.clients = [int(n) for n in args.clients.split(",")]
    except ValueError:
        parser.error(f"--clients {args.clients!r}: expected comma-separated integers")
    for n in args.clients:
        # Uneven splits would change the server batch between rows and spoil the comparison.
        if n < 1 or args.server_batch % n:
            parser.error(f"--server-batch {args.server_batch} is not divisible by {n} clients")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


# -- shared pieces -----------------------------------------------------------------------------
def make_images(
    args: argparse.Namespace, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key views, each [warmup + steps, server_batch, 3, S, S], already on ``device``.

    Generated once so every engine sees the same pixels, and moved up front so no engine pays
    for host-to-device copies inside its timed step.
    """
    generator = torch.Generator().manual_seed(SEED)
    shape = (args.warmup + args.steps, args.server_batch, 3, args.image_size, args.image_size)
    query = torch.randn(shape, generator=generator)
    key = torch.randn(shape, generator=generator)
    return query.to(device), key.to(device)


def build_split(args: argparse.Namespace) -> SplitModel:
    """The split network from a fixed seed, so every engine starts from the same weights."""
    torch.manual_seed(SEED)
    return build_split_model(
        args.arch,
        cut_layer=args.cut_layer,
        width=args.width,
        norm=args.norm,
        image_size=args.image_size,
    )


def sgd() -> Callable[..., torch.optim.Optimizer]:
    """The paper's SGD as an optimizer factory taking ``params``."""
    return partial(torch.optim.SGD, lr=LR, momentum=SGD_MOMENTUM, weight_decay=WEIGHT_DECAY)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers the whole step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- MocoSFL through Lightning -----------------------------------------------------------------
class StepTimer(L.Callback):
    """Wall-clock time of every training batch after the first ``warmup`` ones, in ms."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup = warmup
        self.device = device
        self.ms: list[float] = []
        self._start = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        synchronize(self.device)
        if batch_idx >= self.warmup:
            self.ms.append((time.perf_counter() - self._start) * 1e3)


def federated_batches(query: torch.Tensor, key: torch.Tensor, clients: int) -> list[dict]:
    """Split every server batch into ``clients`` rows: the module's [P, b, 3, S, S] layout."""
    ids = torch.arange(clients, device=query.device)
    return [
        {
            "query": q.view(clients, -1, *q.shape[1:]),
            "key": k.view(clients, -1, *k.shape[1:]),
            "client_ids": ids,
            "step": step,
        }
        for step, (q, k) in enumerate(zip(query, key))
    ]


def time_mocosfl(
    args: argparse.Namespace, clients: int, query: torch.Tensor, key: torch.Tensor
) -> Result:
    """Train the real MocoSFL module for warmup + steps steps and time the timed ones."""
    device = query.device
    module = MocoSFL(
        build_split(args),
        num_clients=clients,
        server_optimizer=sgd(),
        client_optimizer=sgd(),
        fedavg_weights="uniform",
        queue_size=args.queue_size,
        temperature=TEMPERATURE,
        ema_decay=EMA_DECAY,
        symmetric=args.symmetric,
        head_hidden_dim=HEAD_HIDDEN_DIM,
        head_out_dim=HEAD_OUT_DIM,
    )
    timer = StepTimer(args.warmup, device)
    trainer = L.Trainer(
        max_steps=args.warmup + args.steps,
        accelerator=device.type,
        devices=1,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    batches = federated_batches(query, key, clients)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return Result("mocosfl", clients, args.server_batch // clients, timer.ms)


# -- centralized MoCo in a plain loop ----------------------------------------------------------
class CentralizedMoCo:
    """MoCo v2 on the unsplit network (client, server, head of one split model), one optimizer.

    It does what MocoSFL's step does minus the split: momentum update, online and momentum
    passes, InfoNCE against the queue, one SGD step, enqueue. Both views go through each
    branch in one batched pass, the fastest honest way to run it (exact under GroupNorm).
    """

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        split = build_split(args)
        # Built right after the split model, as MocoSFL does, so the head weights match too.
        head = ProjectionHead(split.feature_dim, HEAD_HIDDEN_DIM, HEAD_OUT_DIM)
        self.online = nn.Sequential(split.client, split.server, head).to(device)
        self.ema = momentum_copy(self.online)
        self.queue = NegativeQueue(args.queue_size, HEAD_OUT_DIM).to(device)
        self.optimizer = sgd()(params=self.online.parameters())
        # MocoSFL's "legacy" differs only in which latents feed its second term; the work of a
        # centralized step is that of "true".
        self.two_way = args.symmetric != "off"
        self.autocast = partial(
            torch.autocast,
            device_type=device.type,
            dtype=torch.bfloat16,
            enabled=args.precision == "bf16-mixed",
        )

    def step(self, query: torch.Tensor, key: torch.Tensor) -> None:
        """One training step on views [B, 3, S, S]."""
        update_momentum(list(self.online.parameters()), list(self.ema.parameters()), EMA_DECAY)
        online_in = torch.cat([query, key]) if self.two_way else query
        keys_in = torch.cat([key, query]) if self.two_way else key
        terms = 2 if self.two_way else 1
        with self.autocast():
            queries = F.normalize(self.online(online_in), dim=1).float().chunk(terms)
            with torch.no_grad():
                keys = F.normalize(self.ema(keys_in), dim=1).float().chunk(terms)
        negatives = self.queue.keys
        loss = sum(info_nce(q, k, negatives, TEMPERATURE)[0] for q, k in zip(queries, keys)) / terms
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.queue.enqueue(torch.cat(keys))


def time_centralized(args: argparse.Namespace, query: torch.Tensor, key: torch.Tensor) -> Result:
    """Run the centralized step over the same images and time the steps after warmup."""
    device = query.device
    moco = CentralizedMoCo(args, device)
    ms = []
    for step, (q, k) in enumerate(zip(query, key)):
        synchronize(device)
        start = time.perf_counter()
        moco.step(q, k)
        synchronize(device)
        if step >= args.warmup:
            ms.append((time.perf_counter() - start) * 1e3)
    return Result("centralized", None, args.server_batch, ms)


# -- reporting ---------------------------------------------------------------------------------
def config(args: argparse.Namespace) -> dict:
    """What the numbers depend on: machine, library versions and benchmark settings."""
    return {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "threads": torch.get_num_threads(),
        "arch": args.arch,
        "width": args.width,
        "cut_layer": args.cut_layer,
        "norm": args.norm,
        "image_size": args.image_size,
        "server_batch": args.server_batch,
        "queue_size": args.queue_size,
        "symmetric": args.symmetric,
        "device": args.device,
        "precision": args.precision,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
    }


def rows(results: Sequence[Result], server_batch: int) -> Iterator[dict]:
    """One summary row per engine; ratio = its median ms/step over centralized's."""
    baseline = next(r for r in results if r.engine == "centralized").median_ms
    for r in results:
        yield {
            "engine": r.engine,
            "clients": r.clients,
            "client_batch": r.client_batch,
            "median_ms": r.median_ms,
            "mean_ms": r.mean_ms,
            "images_per_s": server_batch / (r.median_ms / 1e3),
            "ratio_to_centralized": r.median_ms / baseline,
        }


def print_report(cfg: dict, table: Sequence[dict]) -> None:
    """The config line, the table and what its columns mean."""
    gpu = f", gpu {cfg['gpu']}" if cfg["gpu"] else ""
    print(
        f"\nmachine {cfg['machine']} ({cfg['cpu_count']} cpus{gpu}), torch {cfg['torch']}, "
        f"lightning {cfg['lightning']}, threads {cfg['threads']}"
    )
    print(
        f"{cfg['arch']} width {cfg['width']} cut {cfg['cut_layer']} norm {cfg['norm']}, "
        f"{cfg['image_size']}px, server batch {cfg['server_batch']}, queue {cfg['queue_size']}, "
        f"symmetric {cfg['symmetric']}, device {cfg['device']}, precision {cfg['precision']}, "
        f"{cfg['timed_steps']} timed steps after {cfg['warmup_steps']} warmup\n"
    )
    header = (
        f"{'engine':<12}| {'clients':>7} | {'img/client':>10} | {'ms/step (median)':>16} | "
        f"{'ms/step (mean)':>14} | {'images/s':>9} | {'ratio to centralized':>20}"
    )
    print(header)
    print("-" * len(header))
    for row in table:
        clients = "-" if row["clients"] is None else str(row["clients"])
        print(
            f"{row['engine']:<12}| {clients:>7} | {row['client_batch']:>10} | "
            f"{row['median_ms']:>16.1f} | {row['mean_ms']:>14.1f} | "
            f"{row['images_per_s']:>9.1f} | {row['ratio_to_centralized']:>19.2f}x"
        )
    print(
        "\nms/step: wall clock of one server step (median and mean over the timed steps).\n"
        "images/s: server batch / median step time (each image in two augmented views).\n"
        "ratio: median ms/step / centralized median ms/step (>1 = slower than centralized).\n"
        "mocosfl: the MocoSFL module inside a Lightning Trainer, Lightning overhead included;\n"
        "  FedAvg runs once per round, not per step, and is not included.\n"
        "centralized: MoCo v2 on the unsplit network in a plain loop, one SGD optimizer."
    )
    if cfg["symmetric"] == "legacy":
        print("symmetric=legacy: the centralized baseline runs the 'true' (two-term) loss.")


def write_json(path: Path, cfg: dict, table: Sequence[dict], results: Sequence[Result]) -> None:
    """Config, summary rows and every raw step time, for later comparison."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": cfg, "rows": list(table), "raw": [asdict(r) for r in results]}
    path.write_text(json.dumps(payload, indent=2) + "\n")


def quiet_lightning() -> None:
    """Drop Lightning's per-Trainer banners and its num_workers hint: noise in a benchmark that
    feeds pre-built in-memory batches on purpose."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def main(argv: Sequence[str] | None = None) -> None:
    """Time centralized MoCo, then MocoSFL for each client count; print and save the table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_lightning()
    device = torch.device(args.device)
    query, key = make_images(args, device)

    results = [time_centralized(args, query, key)]
    print(f"centralized: {results[-1].median_ms:.1f} ms/step", file=sys.stderr)
    for clients in args.clients:
        results.append(time_mocosfl(args, clients, query, key))
        print(f"mocosfl {clients} clients: {results[-1].median_ms:.1f} ms/step", file=sys.stderr)

    cfg = config(args)
    table = list(rows(results, args.server_batch))
    print_report(cfg, table)
    write_json(args.json, cfg, table, results)
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
