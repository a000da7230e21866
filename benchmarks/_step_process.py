"""One measurement, one process: each measurement runs in a freshly spawned Python process
(``multiprocessing``'s spawn context), one after the other, so that each one reports its own peak
resident memory and none inherits another's allocator state. ``--in-process`` runs them in the
launcher instead (one import of torch and Lightning for all of them; quick checks only).
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import statistics
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import torch

from _build import make_images, server_batch
from _step_centralized import time_centralized
from _step_mocosfl import time_mocosfl


@dataclass
class Job:
    """What to time: ``engine`` (centralized | loop | vmap) on the composed config ``cfg``
    (:func:`_build.compose_train`), the first ``warmup`` steps untimed, on ``device``.
    ``clients`` is None for centralized."""

    engine: str
    clients: int | None
    cfg: dict[str, Any]
    warmup: int
    device: str


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


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (10^6 bytes; ``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def quiet_lightning() -> None:
    """Drop Lightning's per-Trainer banners, its num_workers hint (noise in a benchmark that
    feeds pre-built in-memory batches on purpose) and a deprecation inside Lightning itself."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def measure(job: Job) -> dict[str, Any]:
    """Body of a worker process: time ``job`` and read the process's peak resident memory.
    Returns the :class:`Result` as a dict."""
    cfg = job.cfg
    torch.set_num_threads(cfg["num_threads"])
    quiet_lightning()
    query, key = make_images(cfg, torch.device(job.device))
    if job.engine == "centralized":
        ms = time_centralized(cfg, query, key, job.warmup)
        pool = None
        per_client = server_batch(cfg)
    else:
        ms = time_mocosfl(cfg, query, key, job.warmup)
        pool = cfg["sfl"]["clients_per_step"]
        per_client = cfg["sfl"]["client_batch_size"]
    return asdict(Result(job.engine, job.clients, pool, per_client, peak_rss_mb(), ms))


def run_isolated(job: Job) -> Result:
    """:func:`measure` in a freshly spawned Python process, which exits when it is done."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as worker:
        return Result(**worker.submit(measure, job).result())


def run_in_process(job: Job) -> Result:
    """:func:`measure` in this process: no import per measurement, but the peak resident memory
    is this process's so far and the measurements share its allocator."""
    return Result(**measure(job))
