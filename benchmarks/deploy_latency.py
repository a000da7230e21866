"""What a deployment adds to a MocoSFL step (docs/deployment.md, "Measured").

Per-step wall time of the same run, every client in every step (``sfl.clients_per_step`` =
``sfl.num_clients``), for 1, 4 and 16 clients:

- **simulation**: the clients inside the server's process (``sfl.client_engine=loop``);
- **processes**: one ``python -m mocosfl.deploy.client`` process per client on this machine,
  reached over Unix sockets (``LocalSocketTransport``);
- **flower**: the same client processes behind Flower SuperNodes, a SuperLink with TLS and
  SuperNode authentication (``deploy/loopback.sh``).

A deployed step is split with the server's running totals (``deploy/*`` in ``history.csv``):
**client** is the slowest client's own compute in each exchange (``compute_s`` of its replies),
**transport** the rest of the time waiting for the clients (framing, sockets, Flower's queues and
polling), **server** everything else (the server's forward and backward passes, FedAvg's
averaging, Lightning). The array bytes each traffic part put on the wire are set beside the cost
accounting's figures for the run. ``--memory`` also measures the peak resident memory of one client
process at cut layers 1, 2 and 3 with one image a step.

    .venv/bin/python benchmarks/deploy_latency.py                  # 1, 4, 16 clients, all modes
    .venv/bin/python benchmarks/deploy_latency.py --clients 1 4 --modes simulation processes
    .venv/bin/python benchmarks/deploy_latency.py --memory --clients   # client memory only

The first ``--warmup`` steps are not timed. Run it on a quiet machine: the client processes share
its cores with the server.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import open_dict

from mocosfl.deploy.local_socket import LocalSocketTransport
from mocosfl.deploy.server import compose_run
from mocosfl.train import fit

ROOT = Path(__file__).resolve().parents[1]
MODES = ("simulation", "processes", "flower", "flower-3s")
POLLS = {"flower": 0.1, "flower-3s": 3.0}  # the server's pull interval; 3 s: Grid.send_and_receive
PARTS = ("latents_up", "gradients_down", "model_up", "model_down")


class StepClock(L.Callback):
    """Appends to ``STEP_STARTS`` when every training step begins (``perf_counter``); the run
    builds it from its config (``callbacks.step_clock``)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        STEP_STARTS.append(time.perf_counter())


STEP_STARTS: list[float] = []


def run_overrides(args: argparse.Namespace, clients: int) -> list[str]:
    """The run every mode trains: ``clients`` clients, all of them in every step."""
    return [
        "data=synthetic",
        "data.num_workers=0",
        "logger=csv",
        f"model.width={args.width}",
        f"sfl.cut_layer={args.cut_layer}",
        f"sfl.num_clients={clients}",
        f"sfl.clients_per_step={clients}",
        f"sfl.client_batch_size={args.batch}",
        f"sfl.sync_every={args.sync_every}",
        f"trainer.max_steps={args.warmup + args.steps}",
        "trainer.log_every_n_steps=1",
        "~callbacks.knn",
        "~callbacks.linear_probe",
        "~callbacks.progress",
    ]


def start_clients(overrides: list[str], clients: int, folder: Path) -> dict[int, subprocess.Popen]:
    """One client process per client, once each serves its socket."""
    processes = {}
    for c in range(clients):
        command = [sys.executable, "-m", "mocosfl.deploy.client", "--partition-id", str(c)]
        command += ["--socket", str(folder / f"client{c}.sock"), *overrides]
        log = (folder / f"client{c}.log").open("w")
        processes[c] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    for c, process in processes.items():
        while "serving on" not in (folder / f"client{c}.log").read_text():
            if process.poll() is not None:
                raise RuntimeError((folder / f"client{c}.log").read_text())
            time.sleep(0.2)
    return processes


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of process ``pid`` now (``VmRSS``) and at its peak (``VmHWM``), in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def history_totals(run_dir: Path) -> dict[str, np.ndarray]:
    """The server's running totals by step (the training steps' rows of ``history.csv``)."""
    history = np.genfromtxt(run_dir / "history.csv", delimiter=",", names=True)
    rows = ~np.isnan(history["deploywall_s"])
    return {name: history[name][rows] for name in history.dtype.names}


def split_of(totals: dict[str, np.ndarray], warmup: int) -> dict[str, float]:
    """Seconds a step after ``warmup``: wall, and its client, transport and server parts."""
    first = int(np.searchsorted(totals["step"], warmup))
    steps = totals["step"][-1] - totals["step"][first]

    def per_step(name: str) -> float:
        return float(totals[name][-1] - totals[name][first]) / steps

    wall, waiting, client = (per_step(f"deploy{n}_s") for n in ("wall", "exchange", "client"))
    return {"wall": wall, "client": client, "transport": waiting - client, "server": wall - waiting}


def traffic_of(run_dir: Path, clients: int) -> dict[str, dict[str, float]]:
    """Megabytes of each traffic part: on the wire, and the cost accounting's for the run."""
    history = np.genfromtxt(run_dir / "history.csv", delimiter=",", names=True)
    columns = history.dtype.names
    return {
        part: {  # a part that never went on the wire has no column
            "wire_mb": float(np.nanmax(history[f"deploy{part}_mb"]))
            if f"deploy{part}_mb" in columns
            else 0.0,
            "computed_mb": float(np.nanmax(history[f"cost{part}_mb_per_client_run"])) * clients,
        }
        for part in PARTS
    }


def measure_simulation(args: argparse.Namespace, clients: int, folder: Path) -> dict[str, Any]:
    cfg = compose_run(run_overrides(args, clients), str(folder / "run"))
    with open_dict(cfg):
        cfg.callbacks.step_clock = {"_target_": f"{__name__}.StepClock"}
    STEP_STARTS.clear()
    fit(cfg)
    return {"split": {"wall": float(np.diff(STEP_STARTS[args.warmup :]).mean())}}


def measure_processes(args: argparse.Namespace, clients: int, folder: Path) -> dict[str, Any]:
    overrides = run_overrides(args, clients)
    processes = start_clients(overrides, clients, folder)
    started = {c: memory_mb(p.pid)["VmRSS"] for c, p in processes.items()}
    transport = LocalSocketTransport({c: folder / f"client{c}.sock" for c in processes})
    try:
        fit(compose_run(overrides, str(folder / "run")), clients=transport)
        peaks = {c: memory_mb(p.pid)["VmHWM"] for c, p in processes.items()}
    finally:
        transport.close()
        for process in processes.values():
            process.kill()
            process.wait()
    return {
        "split": split_of(history_totals(folder / "run"), args.warmup),
        "traffic": traffic_of(folder / "run", clients),
        "client_rss_mb": {"start": max(started.values()), "peak": max(peaks.values())},
    }


def measure_flower(
    args: argparse.Namespace, clients: int, folder: Path, poll: float
) -> dict[str, Any]:
    env = {**os.environ, "DEPLOY_DIR": str(folder), "PY": sys.executable, "POLL": str(poll)}
    command = ["bash", str(ROOT / "deploy" / "loopback.sh"), str(clients)]
    overrides = [o for o in run_overrides(args, clients) if not o.startswith("sfl.num_clients")]
    done = subprocess.run([*command, *overrides], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return {
        "split": split_of(history_totals(folder / "run"), args.warmup),
        "traffic": traffic_of(folder / "run", clients),
    }


def import_mb(module: str) -> float:
    """Resident memory (MB) of a fresh Python process once it has imported ``module``."""
    code = (
        f"import {module}; from pathlib import Path; print(Path('/proc/self/status').read_text())"
    )
    status = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    line = next(row for row in status.splitlines() if row.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def measure_memory(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Peak resident memory of one client process (ResNet-18 at ``--memory-width``, one image a
    step) at cut layers 1, 2 and 3, its memory once built, before its first step, and what a
    process holds after importing torch alone and after importing the client's code."""
    out = {}
    for cut in (1, 2, 3):
        settings = argparse.Namespace(**{**vars(args), "cut_layer": cut, "batch": 1})
        settings.width = args.memory_width
        overrides = run_overrides(settings, 1)
        where = folder / f"cut{cut}"
        where.mkdir(parents=True)
        processes = start_clients(overrides, 1, where)
        built = memory_mb(processes[0].pid)["VmRSS"]
        transport = LocalSocketTransport({0: where / "client0.sock"})
        try:
            fit(compose_run(overrides, str(where / "run")), clients=transport)
            peak = memory_mb(processes[0].pid)["VmHWM"]
        finally:
            transport.close()
            processes[0].kill()
            processes[0].wait()
        history = np.genfromtxt(where / "run" / "history.csv", delimiter=",", names=True)
        computed = {
            "params": float(np.nanmax(history["costclient_params"])),
            "activation_mb": float(np.nanmax(history["costclient_activation_mb_per_image"])),
        }
        out[cut] = {"built_mb": built, "peak_mb": peak, "training_mb": peak - built, **computed}
    imports = {"torch": import_mb("torch"), "client": import_mb("mocosfl.deploy.client")}
    return {"imports_mb": imports, "cuts": out}


def print_report(results: dict[str, Any]) -> None:
    measured = [m for m in MODES if any(m in modes for modes in results["steps"].values())]
    print("\nseconds a step (after warm-up); deployed steps split into client / transport / server")
    print("| clients | " + " | ".join(measured) + " | flower - processes |")
    print("|---:|" + "---:|" * (len(measured) + 1))
    for n, modes in results["steps"].items():
        cells = []
        for mode in measured:
            split = modes.get(mode, {}).get("split")
            if split is None:
                cells.append("-")
            elif mode == "simulation":
                cells.append(f"{split['wall']:.3f}")
            else:
                parts = " / ".join(f"{split[p]:.3f}" for p in ("client", "transport", "server"))
                cells.append(f"{split['wall']:.3f} ({parts})")
        both = all("split" in modes.get(m, {}) for m in ("processes", "flower"))
        extra = (
            modes["flower"]["split"]["wall"] - modes["processes"]["split"]["wall"] if both else None
        )
        cells.append("-" if extra is None else f"{extra:.3f}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    for n, modes in results["steps"].items():
        for mode in measured:
            traffic = modes.get(mode, {}).get("traffic")
            if traffic:
                print(f"\nMB on the wire, {n} clients, {mode} (all clients, the whole run)")
                print("| part | on the wire | cost accounting | ratio |")
                print("|---|---:|---:|---:|")
                for part, mb in traffic.items():
                    ratio = mb["wire_mb"] / mb["computed_mb"] if mb["computed_mb"] else float("nan")
                    print(
                        f"| {part} | {mb['wire_mb']:.4f} | {mb['computed_mb']:.4f} | {ratio:.4f} |"
                    )
    if results.get("memory"):
        print("\none client process, batch 1: resident memory (MB) and the accounting's figures")
        print("| cut | built | peak | peak - built | client params | activations/image (MB) |")
        print("|---:|---:|---:|---:|---:|---:|")
        for cut, m in results["memory"]["cuts"].items():
            print(
                f"| {cut} | {m['built_mb']:.1f} | {m['peak_mb']:.1f} | {m['training_mb']:.1f} | "
                f"{m['params']:.0f} | {m['activation_mb']:.3f} |"
            )
        imports = results["memory"]["imports_mb"]
        print(f"a process after importing torch: {imports['torch']:.1f} MB, after importing")
        print(f"the client's code (torch, Lightning, Hydra): {imports['client']:.1f} MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:3]))
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--sync-every", type=int, default=4, help="steps a FedAvg round")
    parser.add_argument("--batch", type=int, default=1, help="images a client step")
    parser.add_argument("--width", type=int, default=16, help="ResNet-18 base channels")
    parser.add_argument("--cut-layer", type=int, default=1)
    parser.add_argument("--memory", action="store_true", help="client memory at cuts 1-3")
    parser.add_argument("--memory-width", type=int, default=64)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks/results/deploy_latency.json"
    )
    args = parser.parse_args(argv)
    measure = {
        "simulation": measure_simulation,
        "processes": measure_processes,
        **{mode: functools.partial(measure_flower, poll=poll) for mode, poll in POLLS.items()},
    }
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "steps": {}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for n in args.clients:
            results["steps"][n] = {}
            for mode in args.modes:
                folder = Path(scratch) / f"{mode}{n}"
                folder.mkdir()
                print(f"deploy_latency: {n} clients, {mode}", file=sys.stderr, flush=True)
                results["steps"][n][mode] = measure[mode](args, n, folder)
                args.json.write_text(json.dumps(results, indent=1))  # kept if a later one fails
        if args.memory:
            print("deploy_latency: client memory at cuts 1-3", file=sys.stderr, flush=True)
            results["memory"] = measure_memory(args, Path(scratch) / "memory")
            args.json.write_text(json.dumps(results, indent=1))
    print_report(results)


if __name__ == "__main__":
    main()
