"""The step-time report: what the numbers depend on, one summary row per measurement (its
median and mean ms/step, images/s and ratio to centralized MoCo, side by side), the printed
table and the JSON file (configuration, rows, failures and every raw step time)."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

from _build import server_batch
from _step_process import Result


def describe(args: argparse.Namespace, cfg: dict[str, Any], launcher_rss_mb: float) -> dict:
    """Machine, library versions and the settings of the composed config ``cfg`` (that of the
    centralized measurement; the others differ in their engine and clients only)."""
    model, sfl = cfg["model"], cfg["sfl"]
    return {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "threads": cfg["num_threads"],
        "paper": args.paper,
        "arch": model["arch"],
        "width": model["width"],
        "cut_layer": sfl["cut_layer"],
        "norm": model["norm"],
        "image_size": model["image_size"],
        "server_batch": server_batch(cfg),
        "queue_size": sfl["queue_size"],
        "loss": sfl["loss"],
        "device": args.device,
        "precision": cfg["trainer"]["precision"],
        "engines": args.engines,
        "clients": args.clients,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "in_process": args.in_process,
        "launcher_peak_rss_mb": launcher_rss_mb,
        "train_config": {node: cfg[node] for node in ("model", "module")},
    }


def rows(results: Sequence[Result], batch: int) -> Iterator[dict]:
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
            "images_per_s": batch / (r.median_ms / 1e3),
            "ratio_to_centralized": r.median_ms / baseline,
            "peak_rss_mb": r.peak_rss_mb,
        }


def print_report(cfg: dict, table: Sequence[dict]) -> None:
    """The config lines, the table and what its columns mean."""
    gpu = f", gpu {cfg['gpu']}" if cfg["gpu"] else ""
    print(
        f"\nmachine {cfg['machine']} ({cfg['cpu_count']} cpus{gpu}), torch {cfg['torch']}, "
        f"lightning {cfg['lightning']}, threads {cfg['threads']}"
    )
    print(
        f"{cfg['arch']} width {cfg['width']} cut {cfg['cut_layer']} norm {cfg['norm']}, "
        f"{cfg['image_size']}px, server batch {cfg['server_batch']}, queue {cfg['queue_size']}, "
        f"loss {cfg['loss']}, device {cfg['device']}, precision {cfg['precision']}, "
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
        "centralized: MoCo v2 on the unsplit network in a plain loop, one optimizer (the\n"
        "  module's server optimizer)."
    )
    if cfg["loss"] == "legacy_sum":
        print("loss legacy_sum: the centralized baseline runs the two_way (two-term) loss.")


def write_json(
    path: Path,
    cfg: dict,
    table: Sequence[dict],
    results: Sequence[Result],
    failures: Sequence[dict],
) -> None:
    """Config, summary rows, failed measurements and every raw step time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": cfg,
        "rows": list(table),
        "failures": list(failures),
        "raw": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
