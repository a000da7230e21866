"""The Python steps of ``benchmarks/gpu_check.sh``, one subcommand each:

* ``bench``: ``step_time.py`` at cut layers 1 and 2, float32 and bf16-mixed, in this one process
  (each a ``step_time.main`` call with the options given after ``--``); one JSON file each in
  ``--work``, a failed setting is recorded and the others still run.
* ``engine``: the faster client engine of one step-time setting (for the training runs).
* ``summary``: the step-time ratios with their targets and the training runs' test kNN top-1, as
  ``summary.txt`` and ``gpu_check.json`` in ``--out``, printed too. It reads files only (no torch
  import), so it also runs after a stage failed or ran out of time.
* ``pack``: copies the pure-Python distributions that the GPU machine's image lacks (Hydra,
  OmegaConf, ANTLR's runtime) from this interpreter into a folder to carry there.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import re
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

# The settings that bench runs, in this order: (cut layer, Lightning precision).
SETTINGS = [(1, "32-true"), (1, "bf16-mixed"), (2, "32-true"), (2, "bf16-mixed")]
ENGINES = ("loop", "vmap")
# The targets of the faster engine's ratio to centralized, at the first and second client count.
TARGETS = (1.10, 1.25)
# The training runs, in the order gpu_check.sh runs them (their run directories' names).
RUNS = ("mocosfl", "centralized")
# What the GPU machine's image lacks of the project's dependencies (all pure Python).
PACKED = ("hydra-core", "omegaconf", "antlr4-python3-runtime")


def bench_json(work: Path, cut: int, precision: str) -> Path:
    return work / f"step_time_cut{cut}_{precision}.json"


def bench(work: Path, options: list[str]) -> int:
    """Every setting of :data:`SETTINGS`; returns the number that failed."""
    import step_time  # imports torch: only this subcommand needs it

    work.mkdir(parents=True, exist_ok=True)
    failed = 0
    for cut, precision in SETTINGS:
        out = bench_json(work, cut, precision)
        print(f"\n== step time: cut layer {cut}, precision {precision} ==", flush=True)
        argv = [*options, f"--cut-layer={cut}", f"--precision={precision}", f"--json={out}"]
        try:
            step_time.main(argv)
        except (Exception, SystemExit) as exc:  # a failed setting is a finding: run the rest
            failed += 1
            error = "".join(traceback.format_exception(exc)).strip()
            print(f"step time, cut {cut}, {precision}: FAILED\n{error}", file=sys.stderr)
            out.with_suffix(".failed").write_text(f"{exc!r}\n")
            if type(exc).__name__ == "SIGTERMException":  # Lightning's, in a fit: time is up
                break
        sys.stdout.flush()
    return failed


def faster_engine(work: Path, cut: int, precision: str, clients: int) -> str | None:
    """The engine with the lower median ms/step at ``clients`` clients, or None if neither ran."""
    path = bench_json(work, cut, precision)
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())["rows"]
    timed = [r for r in rows if r["engine"] in ENGINES and r["clients"] == clients]
    return min(timed, key=lambda r: r["median_ms"])["engine"] if timed else None


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def bench_summary(work: Path, clients: list[int]) -> list[dict[str, Any]]:
    """One entry per setting: its step-time JSON (config, rows, failures, raw step times), the
    faster engine's ratio at each client count and whether it meets its target."""
    out = []
    for cut, precision in SETTINGS:
        path = bench_json(work, cut, precision)
        entry: dict[str, Any] = {"cut_layer": cut, "precision": precision}
        if not path.is_file():
            failed = path.with_suffix(".failed")
            entry["error"] = failed.read_text().strip() if failed.is_file() else "not run"
            out.append(entry)
            continue
        result = json.loads(path.read_text())
        by_key = {(r["engine"], r["clients"]): r for r in result["rows"]}
        central = by_key.get(("centralized", None))
        entry["centralized_ms"] = central["median_ms"] if central else None
        entry["ratios"] = {
            f"{engine} {n}": by_key[engine, n]["ratio_to_centralized"]
            for n in clients
            for engine in ENGINES
            if (engine, n) in by_key
        }
        entry["targets"] = []
        for n, target in zip(clients, TARGETS):
            timed = [(by_key[e, n]["ratio_to_centralized"], e) for e in ENGINES if (e, n) in by_key]
            best = min(timed) if timed else (None, None)
            entry["targets"].append(
                {
                    "clients": n,
                    "faster_engine": best[1],
                    "ratio": best[0],
                    "target": target,
                    "met": best[0] is not None and best[0] <= target,
                }
            )
        entry["step_time"] = result
        out.append(entry)
    return out


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's settings that the summary shows, from its ``.hydra/config.yaml``."""
    import yaml

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    cfg = yaml.safe_load(path.read_text())
    sfl, trainer = cfg["sfl"], cfg["trainer"]
    return {
        "data": cfg["data"]["name"],
        "width": cfg["model"]["width"],
        "cut_layer": sfl["cut_layer"],
        "num_clients": sfl["num_clients"],
        "clients_per_step": sfl["clients_per_step"],
        "client_batch_size": sfl["client_batch_size"],
        "client_engine": sfl["client_engine"],
        "accelerator": trainer["accelerator"],
        "precision": trainer["precision"],
        "max_steps": trainer["max_steps"],
    }


def fit_seconds(run_dir: Path) -> float | None:
    """The fit's wall time that ``mocosfl.train`` printed into ``train.log`` (whole seconds)."""
    log = run_dir / "train.log"
    found = (
        re.findall(r"wall time\s+(?:(\d+)h)?(\d+)m(\d+)s", log.read_text()) if log.is_file() else []
    )
    if not found:
        return None
    hours, minutes, seconds = found[-1]
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)


def train_summary(work: Path, info: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name in RUNS:
        run_dir = work / "train" / name
        entry: dict[str, Any] = {"config": run_config(run_dir)}
        metrics_path = run_dir / "metrics.json"
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
            entry.update(
                test_knn_top1=metrics.get("test/knn_top1"),
                train_loss=metrics.get("train/loss"),
                steps=metrics.get("global_step"),
                metrics=metrics,
            )
        else:
            entry["error"] = "no metrics.json (the run failed or did not start; see log.txt)"
        entry["fit_s"] = fit_seconds(run_dir)
        process_s = info.get(f"{name}_s")
        entry["process_s"] = float(process_s) if process_s else None
        out[name] = entry
    return out


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_bench(report: dict[str, Any]) -> list[str]:
    info, clients = report["info"], report["clients"]
    lines = [
        f"1. step time: resnet18 width {info.get('bench_width', '?')}, server batch "
        f"{info.get('bench_server_batch', '?')}, loss two_way, median ms/step; ratio to "
        "centralized MoCo (target for the faster engine: "
        f"<= {TARGETS[0]:.2f}x at {clients[0]} clients, <= {TARGETS[1]:.2f}x at {clients[1]})",
    ]
    if info.get("only") == "train":
        return [*lines, "   skipped (--only train)"]
    cells = [f"{e} {n}" for n in clients for e in ENGINES]
    lines.append(
        f"   {'cut':>3} {'precision':<10} {'centralized':>11} "
        + " ".join(f"{c:>10}" for c in cells)
        + "   faster engine vs target"
    )
    for entry in report["bench"]:
        head = f"   {entry['cut_layer']:>3} {entry['precision']:<10}"
        if "error" in entry:
            lines.append(f"{head} FAILED: {entry['error']}")
            continue
        central = entry["centralized_ms"]
        ratios = " ".join(f"{fmt_ratio(entry['ratios'].get(c)):>10}" for c in cells)
        verdicts = ", ".join(
            f"{t['clients']}: {t['faster_engine'] or '-'} {fmt_ratio(t['ratio'])} "
            f"{'ok' if t['met'] else 'MISSED'}"
            for t in entry["targets"]
        )
        central_text = "-" if central is None else f"{central:.1f} ms"
        lines.append(f"{head} {central_text:>11} {ratios}   {verdicts}")
        for failure in entry["step_time"]["failures"]:
            lines.append(
                f"       FAILED: {failure['engine']} {failure['clients']}: {failure['error']}"
            )
    return lines


def render_train(report: dict[str, Any]) -> list[str]:
    info = report["info"]
    lines = [f"2. training on {info.get('train_data', '?')}, test kNN top-1 (metrics.json):"]
    if info.get("only") == "bench":
        return [*lines, "   skipped (--only bench)"]
    for name, run in report["train"].items():
        cfg = run["config"]
        what = (
            f"{cfg['num_clients']} client(s), {cfg['clients_per_step']} x "
            f"{cfg['client_batch_size']} images a step, cut {cfg['cut_layer']}, width "
            f"{cfg['width']}, {cfg['client_engine']}, {cfg['accelerator']} {cfg['precision']}"
            if cfg
            else "not started"
        )
        if "error" in run or not finite(run["test_knn_top1"]):
            lines.append(f"   {name:<12} FAILED ({what}): {run.get('error', 'no test kNN')}")
            continue
        timing = f"fit {run['fit_s']:.0f} s" if run["fit_s"] is not None else "fit ? s"
        if run["fit_s"] and run["steps"]:
            timing += f" ({1e3 * run['fit_s'] / run['steps']:.0f} ms/step with setup and kNN)"
        if run["process_s"] is not None:
            timing += f", process {run['process_s']:.0f} s"
        capped = run["steps"] is not None and cfg and run["steps"] < cfg["max_steps"]
        asked = f" (time cap; {cfg['max_steps']} asked)" if capped else ""
        lines.append(
            f"   {name:<12} {run['test_knn_top1']:6.2f}%  after {run['steps']} steps{asked}; "
            f"{what}; {timing}"
        )
    return lines


def render(report: dict[str, Any]) -> str:
    info = report["info"]
    head = (
        f"gpu_check ({info.get('mode', '?')}): {report['machine']}, python "
        f"{info.get('python', '?')}; {info.get('elapsed_s', '?')} s in all"
    )
    return "\n".join([head, "", *render_bench(report), "", *render_train(report)])


def machine(bench: list[dict[str, Any]]) -> str:
    """The GPU (or CPU) and library versions that the step-time runs recorded."""
    for entry in bench:
        if "step_time" in entry:
            cfg = entry["step_time"]["config"]
            where = cfg["gpu"] or f"{cfg['machine']} cpu ({cfg['cpu_count']} cores)"
            return f"{where}, torch {cfg['torch']}, lightning {cfg['lightning']}"
    return "machine unknown (no step-time result)"


def check_finite(report: dict[str, Any]) -> list[str]:
    """What is missing or not a finite number (empty when every measurement is there); a stage
    left out with ``--only`` is not checked."""
    problems = []
    only = report["info"].get("only")
    for entry in report["bench"] if only != "train" else []:
        name = f"cut {entry['cut_layer']} {entry['precision']}"
        if "error" in entry:
            problems.append(f"{name}: {entry['error']}")
            continue
        if not finite(entry["centralized_ms"]):
            problems.append(f"{name}: centralized")
        for n in report["clients"]:
            for engine in ENGINES:
                if not finite(entry["ratios"].get(f"{engine} {n}")):
                    problems.append(f"{name}: {engine} {n} clients")
    for name, run in report["train"].items() if only != "bench" else []:
        if not finite(run.get("test_knn_top1")):
            problems.append(f"training {name}: test kNN top-1")
    return problems


def summary(work: Path, out: Path, clients: list[int], info: dict[str, str]) -> int:
    report = {
        "info": info,
        "clients": clients,
        "targets": list(TARGETS),
        "bench": bench_summary(work, clients),
        "train": train_summary(work, info),
    }
    report["machine"] = machine(report["bench"])
    report["missing"] = check_finite(report)
    text = render(report)
    if report["missing"]:
        text += "\n\nmissing or not finite: " + "; ".join(report["missing"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.txt").write_text(text + "\n")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(text)
    return 1 if report["missing"] else 0


def pack(target: Path) -> None:
    """Copy the files of :data:`PACKED` (as this interpreter has them) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in PACKED:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(
                f"error: {sys.executable} has no {name}: set PYTHON=<an interpreter that has it>"
            ) from None
        copied = 0
        for file in dist.files or []:
            source = Path(dist.locate_file(file)).resolve()
            if file.parts[0] == ".." or "__pycache__" in file.parts or not source.is_file():
                continue  # scripts outside site-packages, and compiled bytecode
            if source.suffix in (".so", ".pyd"):
                raise SystemExit(f"error: {name} is not pure Python ({file}); carry it as a wheel")
            dest = target / file
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
            copied += 1
        print(f"{name} {dist.version}: {copied} files")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"packed into {target} ({size / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description="the Python steps of benchmarks/gpu_check.sh")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bench", help="step_time.py at cut 1 and 2, float32 and bf16-mixed")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("options", nargs=argparse.REMAINDER, help="-- then step_time.py's options")
    p = sub.add_parser("engine", help="the faster engine of one step-time setting")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--cut", type=int, required=True)
    p.add_argument("--precision", required=True)
    p.add_argument("--clients", type=int, required=True)
    p = sub.add_parser("summary", help="summary.txt and gpu_check.json")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--clients", required=True, help="the two client counts, comma-separated")
    p.add_argument("--info", action="append", default=[], help="KEY=VALUE, kept in the JSON")
    p = sub.add_parser("pack", help="copy Hydra, OmegaConf and ANTLR into a folder")
    p.add_argument("target", type=Path)
    args = parser.parse_args()
    if args.command == "bench":
        options = args.options[1:] if args.options[:1] == ["--"] else args.options
        failed = bench(args.work, options)
        print(f"\nstep time: {len(SETTINGS) - failed} of {len(SETTINGS)} settings ran")
    elif args.command == "engine":
        print(faster_engine(args.work, args.cut, args.precision, args.clients) or "loop")
    elif args.command == "summary":
        info = dict(item.split("=", 1) for item in args.info)
        clients = [int(n) for n in args.clients.split(",")]
        sys.exit(summary(args.work, args.out, clients, info))
    else:
        pack(args.target)


if __name__ == "__main__":
    main()
