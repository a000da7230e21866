"""Milliseconds per training step and peak memory: MocoSFL's loop and vmap client engines at 10,
100 and 1000 clients against centralized MoCo, each a whole training process of its own.

Every measurement trains the same network (client part + server part + projection head, built
from one seed) on the same random images at the same server batch, each in a fresh process, one
after the other (``_step_process.py``; ``--in-process``: all in this one, for quick checks). The
network, optimizers, queue, temperature, momentum decay, loss and Trainer are those of
``conf/train.yaml``, composed with this script's options (``_build.py``):

* ``centralized``: MoCo v2 on the unsplit network in a plain PyTorch loop
  (``_step_centralized.py``).
* ``loop`` / ``vmap``: the real MocoSFL module with that client engine in a Lightning Trainer
  (``_step_mocosfl.py``); a step's pool is ``min(clients, server batch)`` clients of
  ``server batch / pool`` images, moving on every step when there are more clients.

The table (``_step_report.py``) gives each measurement's median and mean ms/step, images/s, its
ratio to centralized and its peak resident memory, all from this one run. ``--paper`` runs the
network and step that ``conf/train.yaml`` trains by default (the paper's ResNet-18, width 64).

Run: ``python benchmarks/step_time.py`` (``--help`` lists the options). Results are printed as a
table and written as JSON (configuration, summary rows and every raw step time).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mocosfl.sfl.engines import CLIENT_ENGINES
from mocosfl.sfl.loss import LOSS_MODES

from _build import compose_train, config_defaults, pool_size, server_batch, train_overrides
from _step_process import Job, Result, peak_rss_mb, run_in_process, run_isolated
from _step_report import describe, print_report, rows, write_json

DEFAULT_JSON = Path(__file__).parent / "results" / "step_time.json"


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate the options; ``--paper`` takes the network and step from
    :func:`_build.config_defaults`."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Each measurement runs in a fresh process, one after the other; the settings "
        "not given here are those of conf/train.yaml.",
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
    parser.add_argument("--arch", default="resnet18", help="backbone (model=<arch>)")
    parser.add_argument("--width", type=int, default=16, help="base channels (64 = paper)")
    parser.add_argument("--cut-layer", type=int, default=1, help="1 = stem only (MocoSFL-1)")
    parser.add_argument("--server-batch", type=int, default=100, help="images per server step")
    parser.add_argument("--image-size", type=int, default=32, help="pixels per side")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--loss",
        choices=LOSS_MODES,
        default="two_way",
        help="how a step feeds InfoNCE its two views (sfl.loss)",
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
        help="the network and step that conf/train.yaml trains by default (the paper's, "
        "docs/paper.md) instead of this script's smaller defaults; --cut-layer may still be "
        "given (the paper trains several cuts)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this process, one after the other, instead of a fresh "
        "process each: one import instead of one per measurement (for quick checks); the peak "
        "RSS is then this process's so far",
    )
    args = parser.parse_args(argv)
    if args.paper:
        for dest, value in config_defaults().items():
            if dest == "cut_layer" and args.cut_layer != parser.get_default(dest):
                continue  # the paper's network, cut elsewhere
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


def job(args: argparse.Namespace, engine: str, clients: int | None) -> Job:
    """One measurement on ``conf/train.yaml`` composed for it; centralized MoCo is composed as
    one client holding the whole server batch (its engine setting is unused)."""
    overrides = train_overrides(args, "loop" if clients is None else engine, clients or 1)
    return Job(engine, clients, compose_train(overrides), args.warmup, args.device)


def main(argv: Sequence[str] | None = None) -> None:
    """Time centralized MoCo, then every engine at every client count, each in its own process;
    print and save the table."""
    args = parse_args(argv)
    run = run_in_process if args.in_process else run_isolated
    baseline = job(args, "centralized", None)
    results: list[Result] = [run(baseline)]
    print(f"centralized: {results[-1].median_ms:.1f} ms/step", file=sys.stderr)
    failures = []
    for clients in args.clients:
        for engine in args.engines:
            label = f"{engine} {clients} clients"
            try:
                results.append(run(job(args, engine, clients)))
            except Exception as exc:  # a failing engine is a finding: report it, time the rest
                trace = "".join(traceback.format_exception(exc))
                print(f"{label}: FAILED\n{trace}", file=sys.stderr)
                failures.append({"engine": engine, "clients": clients, "error": repr(exc)})
                continue
            r = results[-1]
            print(f"{label}: {r.median_ms:.1f} ms/step, {r.peak_rss_mb:.0f} MB", file=sys.stderr)

    cfg = describe(args, baseline.cfg, peak_rss_mb())
    table = list(rows(results, server_batch(baseline.cfg)))
    print_report(cfg, table)
    for failure in failures:
        print(f"FAILED: {failure['engine']}, {failure['clients']} clients: {failure['error']}")
    write_json(args.json, cfg, table, results, failures)
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
