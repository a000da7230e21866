"""Milliseconds per training step and peak memory: MocoSFL's loop and vmap client engines at 10,
100 and 1000 clients against centralized MoCo, each a whole training process of its own.

Every measurement trains the same network (client part + server part + projection head, built
from one seed) on the same random images at the same server batch, in a fresh Python process
(``multiprocessing``'s spawn context), one after the other, so each one reports its own peak
resident memory and none inherits another's allocator state:

* ``centralized``: MoCo v2 on the unsplit network in a plain PyTorch loop: one SGD optimizer, a
  momentum copy, the same queue size, temperature and symmetric-loss setting.
* ``loop`` / ``vmap``: the real :class:`mocosfl.sfl.MocoSFL` module with that
  ``client_engine``, driven by a Lightning ``Trainer`` (Lightning's per-step overhead included).
  A step's pool is ``min(clients, server_batch)`` clients of ``server_batch // pool`` images;
  with more clients than that the pool moves on every step (step t trains clients
  ``(t * pool + i) % clients``), so the engines gather and scatter different clients, as in a
  real 1000-client run. FedAvg runs once per round, not per step, and is not timed.

The run ends with a verdict against the project's step-time targets, computed from the rows it
measured: the faster engine's median step time over centralized's at cut layer 1 (<= 1.10 at 100
clients, <= 1.25 at 1000) and the peak resident memory of 1000 clients (< 4 GB). ``--paper`` runs
the paper's full ResNet-18 and sets its images/s beside the original code's.

Run: ``python benchmarks/step_time.py`` (``--help`` lists the options). Results are printed as a
table and written as JSON (configuration, summary rows, verdict and every raw step time).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mocosfl.models import ProjectionHead, SplitModel, build_split_model
from mocosfl.sfl import MocoSFL, NegativeQueue, info_nce, momentum_copy, update_momentum
from mocosfl.sfl.engines import CLIENT_ENGINES

# Training settings of conf/sfl/default.yaml and conf/model/resnet18.yaml, so the step does
# the work a real run does.
LR, SGD_MOMENTUM, WEIGHT_DECAY = 0.06, 0.9, 5e-4
TEMPERATURE, EMA_DECAY = 0.1, 0.99
HEAD_HIDDEN_DIM, HEAD_OUT_DIM = 1024, 1024
SEED = 0
DEFAULT_JSON = Path(__file__).parent / "results" / "step_time.json"

# Issue 6's targets, all at cut layer 1: faster engine / centralized (median ms/step) by client
# count, and the peak resident memory of a 1000-client process.
TARGET_CUT_LAYER = 1
TARGET_RATIOS = {100: 1.10, 1000: 1.25}
TARGET_RSS_CLIENTS, TARGET_RSS_MB = 1000, 4000.0
# The paper's network and step (``--paper``), and what the original code trains at in it on a
# 2-core CPU, one thread (9.4-9.6 s/step at 5, 100 and 1000 clients): a figure from the issue,
# not measured by this benchmark.
PAPER = {
    "arch": "resnet18",
    "width": 64,
    "cut_layer": 1,
    "norm": "gn",
    "image_size": 32,
    "server_batch": 100,
    "threads": 1,
    "symmetric": "true",
}
ORIGINAL_IMAGES_PER_S = 10.5


@dataclass
class Result:
    """One measurement; ``ms`` holds every timed step (warmup excluded). ``clients`` and ``pool``
    are None for centralized."""

    engine: str
    clients: int | None
    pool: int | None
    images_per_client: int
    peak_rss_mb: float
    ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.ms)


@dataclass
class Check:
    """One line of the verdict: ``value`` against ``limit`` (``met`` is None where the target
    does not apply to this configuration and the value is only reported)."""

    what: str
    value: float
    unit: str
    op: str
    limit: float
    met: bool | None
    digits: int = 2


# -- command line ------------------------------------------------------------------------------
def comma_list(parse: Callable[[str], Any]) -> Callable[[str], list]:
    """An argparse ``type`` for comma-separated values, each converted by ``parse``."""

    def convert(text: str) -> list:
        try:
            return [parse(item) for item in text.split(",")]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    return convert


def engine_name(name: str) -> str:
    """A MocoSFL client engine (``sfl.client_engine``)."""
    if name not in CLIENT_ENGINES:
        raise ValueError(f"{name!r} is not a client engine; choose {', '.join(CLIENT_ENGINES)}")
    return name


def pool_size(clients: int, server_batch: int) -> int:
    """Clients trained in one step: all of them, or one image each when there are more."""
    return min(clients, server_batch)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate the options; ``--paper`` fixes the settings in :data:`PAPER`."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Each measurement runs in a fresh process, one after the other; the run ends "
        "with a verdict against the step-time targets (cut layer 1: faster engine / centralized <= "
        "1.10 at 100 clients, <= 1.25 at 1000; 1000 clients under 4 GB of resident memory).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--engines",
        type=comma_list(engine_name),
        default="loop,vmap",
        help="MocoSFL client engines, comma-separated (centralized MoCo always runs)",
    )
    parser.add_argument(
        "--clients",
        type=comma_list(int),
        default="10,100,1000",
        help="client counts, comma-separated; a step trains min(clients, server batch) of them",
    )
    parser.add_argument("--arch", default="resnet18", help="backbone")
    parser.add_argument("--width", type=int, default=16, help="base channels (64 = paper)")
    parser.add_argument("--cut-layer", type=int, default=1, help="1 = stem only (MocoSFL-1)")
    parser.add_argument("--server-batch", type=int, default=100, help="images per server step")
    parser.add_argument("--image-size", type=int, default=32, help="pixels per side")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--symmetric",
        choices=("true", "legacy", "off"),
        default="true",
        help="symmetric loss (sfl.symmetric)",
    )
    parser.add_argument(
        "--norm", choices=("gn", "bn"), default="gn", help="GroupNorm or BatchNorm (vmap: gn)"
    )
    parser.add_argument("--queue-size", type=int, default=6000, help="negative keys")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train")
    parser.add_argument(
        "--precision", choices=("32-true", "bf16-mixed"), default="32-true", help="Lightning's"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the paper's configuration: ResNet-18 width 64 (GroupNorm + weight "
        "standardisation), cut layer 1, 32 px, server batch 100, symmetric loss, 1 thread; "
        "printed beside the original code's images/s",
    )
    args = parser.parse_args(argv)
    if args.paper:
        for dest, value in PAPER.items():
            given = getattr(args, dest)
            if given not in (value, parser.get_default(dest)):
                parser.error(f"--paper fixes --{dest.replace('_', '-')} to {value}, not {given}")
            setattr(args, dest, value)
    for n in args.clients:
        # Uneven splits would change the server batch between rows and spoil the comparison.
        if n < 1 or args.server_batch % pool_size(n, args.server_batch):
            parser.error(
                f"--server-batch {args.server_batch} is not divisible by a pool of "
                f"{pool_size(n, args.server_batch)} clients ({n} clients)"
            )
    if "vmap" in args.engines and args.norm == "bn":
        parser.error("the vmap engine needs --norm gn (a client model without buffers)")
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

    Generated from one seed so every measurement sees the same pixels, and moved up front so
    none pays for host-to-device copies inside its timed step.
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


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (10^6 bytes; ``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


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
    """Split every server batch over the step's pool: the module's [P, b, 3, S, S] layout.

    Step t trains clients ``(t * P + arange(P)) % clients``, so with more clients than the pool
    every step gathers different ones.
    """
    pool = pool_size(clients, query.shape[1])
    offsets = torch.arange(pool, device=query.device)
    return [
        {
            "query": q.view(pool, -1, *q.shape[1:]),
            "key": k.view(pool, -1, *k.shape[1:]),
            "client_ids": (step * pool + offsets) % clients,
            "step": step,
        }
        for step, (q, k) in enumerate(zip(query, key))
    ]


def time_mocosfl(
    args: argparse.Namespace, engine: str, clients: int, query: torch.Tensor, key: torch.Tensor
) -> list[float]:
    """Train the real MocoSFL module with client engine ``engine`` for warmup + steps steps;
    the timed steps' ms."""
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
        client_engine=engine,
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
    return timer.ms


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


def time_centralized(
    args: argparse.Namespace, query: torch.Tensor, key: torch.Tensor
) -> list[float]:
    """Run the centralized step over the same images; the ms of the steps after warmup."""
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
    return ms


# -- one measurement, one process --------------------------------------------------------------
def measure(args: argparse.Namespace, engine: str, clients: int | None) -> dict:
    """Body of a worker process: time ``engine`` (centralized | loop | vmap) at ``clients`` and
    read the process's peak resident memory. Returns the :class:`Result` as a dict."""
    torch.set_num_threads(args.threads)
    quiet_lightning()
    query, key = make_images(args, torch.device(args.device))
    if engine == "centralized":
        ms = time_centralized(args, query, key)
        pool, per_client = None, args.server_batch
    else:
        ms = time_mocosfl(args, engine, clients, query, key)
        pool = pool_size(clients, args.server_batch)
        per_client = args.server_batch // pool
    return asdict(Result(engine, clients, pool, per_client, peak_rss_mb(), ms))


def run_isolated(args: argparse.Namespace, engine: str, clients: int | None) -> Result:
    """:func:`measure` in a freshly spawned Python process, which exits when it is done."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as worker:
        return Result(**worker.submit(measure, args, engine, clients).result())


# -- reporting ---------------------------------------------------------------------------------
def config(args: argparse.Namespace, launcher_rss_mb: float) -> dict:
    """What the numbers depend on: machine, library versions and benchmark settings."""
    return {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "threads": args.threads,
        "paper": args.paper,
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
        "engines": args.engines,
        "clients": args.clients,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "launcher_peak_rss_mb": launcher_rss_mb,
    }


def rows(results: Sequence[Result], server_batch: int) -> Iterator[dict]:
    """One summary row per measurement; ratio = its median ms/step over centralized's."""
    baseline = next(r for r in results if r.engine == "centralized").median_ms
    for r in results:
        yield {
            "engine": r.engine,
            "clients": r.clients,
            "pool": r.pool,
            "images_per_client": r.images_per_client,
            "median_ms": r.median_ms,
            "mean_ms": r.mean_ms,
            "images_per_s": server_batch / (r.median_ms / 1e3),
            "ratio_to_centralized": r.median_ms / baseline,
            "peak_rss_mb": r.peak_rss_mb,
        }


def verdict(cfg: dict, table: Sequence[dict]) -> list[Check]:
    """Issue 6's targets, judged on the measured rows only (a target without its rows is left
    out). Away from cut layer 1 the same figures are reported without a judgement."""
    judged = cfg["cut_layer"] == TARGET_CUT_LAYER
    federated = [row for row in table if row["engine"] != "centralized"]
    checks = []
    for clients, limit in TARGET_RATIOS.items():
        candidates = [row for row in federated if row["clients"] == clients]
        if candidates:
            best = min(candidates, key=lambda row: row["median_ms"])
            ratio = best["ratio_to_centralized"]
            checks.append(
                Check(
                    f"faster engine ({best['engine']}) / centralized, {clients} clients",
                    ratio,
                    "x",
                    "<=",
                    limit,
                    ratio <= limit if judged else None,
                )
            )
    for row in federated:
        if row["clients"] == TARGET_RSS_CLIENTS:
            rss = row["peak_rss_mb"]
            checks.append(
                Check(
                    f"peak RSS, {row['engine']}, {TARGET_RSS_CLIENTS} clients",
                    rss,
                    " MB",
                    "<",
                    TARGET_RSS_MB,
                    rss < TARGET_RSS_MB if judged else None,
                    digits=0,
                )
            )
    return checks


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
        f"{'engine':<12}| {'clients':>7} | {'pool':>4} | {'img/client':>10} | "
        f"{'ms/step (median)':>16} | {'ms/step (mean)':>14} | {'images/s':>9} | "
        f"{'ratio to centralized':>20} | {'peak RSS MB':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in table:
        clients, pool = ("-" if row[k] is None else str(row[k]) for k in ("clients", "pool"))
        print(
            f"{row['engine']:<12}| {clients:>7} | {pool:>4} | {row['images_per_client']:>10} | "
            f"{row['median_ms']:>16.1f} | {row['mean_ms']:>14.1f} | "
            f"{row['images_per_s']:>9.1f} | {row['ratio_to_centralized']:>19.2f}x | "
            f"{row['peak_rss_mb']:>11.0f}"
        )
    print(
        "\nms/step: wall clock of one server step (median and mean over the timed steps).\n"
        "images/s: server batch / median step time (each image in two augmented views).\n"
        "ratio: median ms/step / centralized median ms/step (>1 = slower than centralized).\n"
        "pool: clients trained per step, moving on every step when there are more clients.\n"
        "peak RSS: ru_maxrss of the measurement's own process, in MB (10^6 bytes); Linux carries\n"
        f"  it over from the launcher, whose peak ({cfg['launcher_peak_rss_mb']:.0f} MB) is a "
        "floor.\n"
        "loop, vmap: the MocoSFL module with that client engine inside a Lightning Trainer,\n"
        "  Lightning overhead included; FedAvg runs once per round and is not included.\n"
        "centralized: MoCo v2 on the unsplit network in a plain loop, one SGD optimizer."
    )
    if cfg["symmetric"] == "legacy":
        print("symmetric=legacy: the centralized baseline runs the 'true' (two-term) loss.")


def print_verdict(cfg: dict, table: Sequence[dict], checks: Sequence[Check]) -> None:
    """The verdict lines and, for ``--paper`` on the CPU, the original code's reference."""
    if checks:
        scope = (
            ""
            if cfg["cut_layer"] == TARGET_CUT_LAYER
            else f"; they are for cut layer {TARGET_CUT_LAYER}, so cut layer "
            f"{cfg['cut_layer']} is reported, not judged"
        )
        print(f"\nverdict (the step-time targets{scope}):")
        for c in checks:
            outcome = {True: "met", False: "MISSED", None: "-"}[c.met]
            value, limit = (f"{x:.{c.digits}f}{c.unit}" for x in (c.value, c.limit))
            print(f"  {c.what}: {value} (target {c.op} {limit}): {outcome}")
    if cfg["paper"]:
        print("\nthe paper's configuration, images/s:")
        for row in table:
            clients = "" if row["clients"] is None else f", {row['clients']} clients"
            print(f"  {row['engine']}{clients}: {row['images_per_s']:.1f}")
        if cfg["device"] == "cpu" and cfg["precision"] == "32-true":
            print(
                f"  original code: {ORIGINAL_IMAGES_PER_S} (original code, measured by the "
                "issue's author on this machine; not measured by this run)"
            )


def write_json(
    path: Path,
    cfg: dict,
    table: Sequence[dict],
    checks: Sequence[Check],
    results: Sequence[Result],
    failures: Sequence[dict],
) -> None:
    """Config, summary rows, verdict, failed measurements and every raw step time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": cfg,
        "rows": list(table),
        "verdict": [asdict(c) for c in checks],
        "failures": list(failures),
        "raw": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def quiet_lightning() -> None:
    """Drop Lightning's per-Trainer banners, its num_workers hint (noise in a benchmark that
    feeds pre-built in-memory batches on purpose) and a deprecation inside Lightning itself."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def main(argv: Sequence[str] | None = None) -> None:
    """Time centralized MoCo, then every engine at every client count, each in its own process;
    print and save the table and the verdict."""
    args = parse_args(argv)
    results = [run_isolated(args, "centralized", None)]
    print(f"centralized: {results[-1].median_ms:.1f} ms/step", file=sys.stderr)
    failures = []
    for clients in args.clients:
        for engine in args.engines:
            label = f"{engine} {clients} clients"
            try:
                results.append(run_isolated(args, engine, clients))
            except Exception as exc:  # a failing engine is a finding: report it, time the rest
                trace = "".join(traceback.format_exception(exc))
                print(f"{label}: FAILED\n{trace}", file=sys.stderr)
                failures.append({"engine": engine, "clients": clients, "error": repr(exc)})
                continue
            r = results[-1]
            print(f"{label}: {r.median_ms:.1f} ms/step, {r.peak_rss_mb:.0f} MB", file=sys.stderr)

    cfg = config(args, peak_rss_mb())
    table = list(rows(results, args.server_batch))
    checks = verdict(cfg, table)
    print_report(cfg, table)
    for failure in failures:
        print(f"FAILED: {failure['engine']}, {failure['clients']} clients: {failure['error']}")
    print_verdict(cfg, table, checks)
    write_json(args.json, cfg, table, checks, results, failures)
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
