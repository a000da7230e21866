"""The measured study, CPU tier: every method setting x seeds on the real CIFAR-10, one table.

Trains each row of ``_study_rows.ROWS`` (MoCo centralized; MocoSFL at 5, 100 and 1000 clients,
IID and non-IID, cut 1 and 2, fixed and legacy; FL-MoCo, FedBYOL, FedEMA at 5 and 100 clients)
for 2 or 3 seeds, each run a ``python -m mocosfl.train`` process of one thread, ``--jobs`` at a
time, and writes ``benchmarks/results/study.json`` (every run, and per row the mean ± std over
its seeds), ``study.png`` (val kNN top-1 against images processed, one line a row) and
``study.md``, the table it prints: test kNN and linear-probe top-1, the client's parameters,
MFLOPs a training image, activation memory at its batch, MB it uploads an epoch, wall minutes.
After the runs it rebuilds each run's network at initialisation (``_study_init.py``) and measures
its val and test kNN: each row's gain is over the network it started from, seed by seed, and each
curve starts there, at 0 images.

    .venv/bin/python benchmarks/study.py                      # the default tier, ~1 h, 2 cores
    .venv/bin/python benchmarks/study.py --quick              # every row, 1 seed, tiny: minutes
    .venv/bin/python benchmarks/study.py --rows centralized mocosfl1_100c_noniid --seeds-scale 0.5
    .venv/bin/python benchmarks/study.py --markdown           # the table of an existing JSON
    WANDB_MODE=offline .venv/bin/python benchmarks/study.py --markdown --wandb
    .venv/bin/python benchmarks/study.py --add-init           # the init kNN of an older JSON

**Every row** trains ResNet-18 on all 48,000 CIFAR-10 training images left after holding out
2,000 for validation, at 100 images a step (the pool times the client batch), for the same
``--steps``, so every method processes the same images. The one-way loss, 1 thread, the CSV
logger and no loader workers are ``experiment=cifar10_quick``'s; FedAvg every 10 steps in every
row (``sfl.sync_every=10``: 28 rounds in 280 steps, so that the rows whose pool changes every
round, 1000 clients of which 100 a round and the FL-SSL rows' 100 clients of which 5, see 2,800
and 140 client rounds rather than a handful). Evaluation: val kNN every ``steps // 4`` steps
(``callbacks.knn.every_n_steps``, the last point at the end), and at the end test kNN (k=200,
T=0.1) on all 10,000 test images and the default cheap linear probe (10 epochs on standardised
features, the epoch chosen on val). The kNN bank and the probe's training set are 5,000 of the
training images (``data.eval_train_images=5000``, a fixed random subset per seed, the size of
cifar10_quick's bank), and the validation split is 2,000 images: with the default 45,000 + 5,000
the evaluation would cost more than the training (see below). Each row's overrides and the
reasons for them are in ``_study_rows.py``; the centralized row's cost cells are n/a (it runs as
one client of the cut-1 split, whose costs it logs; a centralized model sends nothing).

**Budget.** Measured here on 2 shared cores (other jobs were running most of the time, so the
times are contended and vary about 2x), two runs side by side, 1 thread each, ResNet-18 width
16, one-way loss, seconds a step between steps 10 and 30:

    centralized (batch 100, loop)                 0.73 quieter .. 1.41 contended
    100 clients x 1 image, cut 1   loop / vmap    0.62 / 0.79 quieter; 1.13 / 1.12 side by side;
                                                  1.61 / 1.21 contended
    1000 clients (100 a round)     loop / vmap    1.26 / 1.00 contended; vmap 0.58 quieter
    100 clients x 1 image, cut 2   loop / vmap    2.11 / 1.41 contended; vmap 0.63 quieter
    5 clients x 20, cut 1 (loop)                  0.63 quieter .. 1.96 contended
    legacy, 100 clients (vmap)                    0.53
    FL-MoCo 5 / 100 clients (512/128 head)        1.02 / 1.17
    FedBYOL 5 / 100 clients; FedEMA 5             0.93 / 1.57; 0.58

so the one-image rows use ``sfl.client_engine=vmap`` (never slower, 1.5x faster at cut 2 when
contended) and the 5-client rows the loop engine. Evaluation: a forward pass of the width-16
network cost 1.3-1.7 ms an image (in-process, 5,000 and 10,000 images, batch 256; batch 1024 was
slower) and about 2.5 ms inside two contended runs. The full protocol (bank 45,000, val 5,000,
test 10,000) would be 60,000 images, 80-150 s at the end of every run and 50,000 for every val
point. With the 5,000-image bank and 2,000 val images a val point is 7,000 images (10-18 s) and
the end 17,000 (25-43 s): 38,000 images, 50-95 s a run for 4 points. A run also spends 15-25 s
starting (imports, the cached images, the partition; drawing the 1000-client partition 13 s).

Checked end to end on a quiet moment of the machine, two runs of this script's settings side by
side at ``--steps 40``: ``mocosfl3_100c_noniid`` took 66 s (~8 s to start, 0.6 s a step, ~6 s a
val point, 10 s at the end), ``fedbyol_100c_noniid`` 84 s (0.9 s a step, 16 s at the end).

Width 16 (cifar10_quick's) and 280 steps (28,000 images, 0.58 of an epoch), 27 runs. Quiet:
27 x (8 s + 34 s) + 280 steps x (16 MocoSFL runs x 0.6 s + 11 FL-SSL runs x 0.85 s) = 1,134 +
5,306 = 6,440 s of runs, 54 minutes on 2 cores. At the contended times above: 27 x (25 s + 85 s)
+ 280 x (16 x 0.8 s + 11 x 1.1 s) = 2,970 + 6,970 = 9,940 s, 83 minutes; if other jobs take half
the CPU throughout, up to ~110 (``--steps 200`` then keeps it near 85). Add about a minute to
extract and decode the images once. The slow rows start first, so the two job slots end together.

**--quick** runs every row with 1 seed at width 4, 3 steps, 2,000 training images, a 500-image
bank and validation split: the same code path in a few minutes (``--synthetic`` replaces
CIFAR-10 by generated images, for the tests). A bad row name, a row that does not compose, or a
failed run stops the study with one line (a failed run's stderr tail first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

# Beside this file (python puts a script's folder first on sys.path; tests add benchmarks/).
from _study_report import log_wandb, markdown, plot, run_record, summarize
from _study_rows import (
    IMAGES_PER_STEP,
    ROWS,
    Row,
    Settings,
    check_rows,
    run_overrides,
    seeds_of,
    select,
)

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
RESULTS = ROOT / "benchmarks" / "results"
WIDTH, STEPS = 16, 280
QUICK = {"width": 4, "steps": 3, "points": 3, "sync_every": 2, "val_images": 500}
QUICK_DATA = {"eval_train_images": 500, "max_train_images": 2000}
# Relative seconds a step (measured above): the slow runs go first, so both job slots end together.
SLOW_FIRST = {"fl-ssl": 1.3, "legacy": 0.8}


def extracted(root: str | None, tmp: Path) -> Path:
    """The CIFAR-10 image folder: ``--root``, or the shared archive extracted into ``tmp``."""
    if root:
        if not (Path(root) / "train").is_dir():
            raise SystemExit(f"error: --root {root} has no train/ folder")
        return Path(root).resolve()
    if not ARCHIVE.is_file():
        raise SystemExit(f"error: give --root <CIFAR-10 image folder>; {ARCHIVE} does not exist")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(tmp, filter="data")
    return tmp / "cifar10-jpeg"


def decode_once(root: Path) -> None:
    """Decode the folder once (it caches the tensors in ``root``), so that the first runs side
    by side do not both decode 60,000 JPEGs."""
    code = (
        "import sys; from mocosfl.data import load_image_set\n"
        "for split in ('train', 'test'): load_image_set('imagefolder', sys.argv[1], split, False,"
        " 32, None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"error: cannot read {root}: {done.stderr.strip().splitlines()[-1]}")


class Runner:
    """Training processes, ``jobs`` at a time; the first failure stops the others."""

    def __init__(self, settings: Settings, work: Path) -> None:
        self.settings, self.work = settings, work
        self.failed = threading.Event()
        self.lock = threading.Lock()
        self.running: list[subprocess.Popen] = []

    def train(self, name: str, row: Row, seed: int) -> dict[str, Any] | None:
        if self.failed.is_set():
            return None
        run_dir = self.work / name / f"seed{seed}"
        overrides = run_overrides(self.settings, row, seed)
        command = [sys.executable, "-m", "mocosfl.train", *overrides, f"hydra.run.dir={run_dir}"]
        log = self.work / f"{name}-seed{seed}.log"
        started = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            with self.lock:
                self.running.append(proc)
            code = proc.wait()
            with self.lock:
                self.running.remove(proc)
        wall = time.monotonic() - started
        if code and not self.failed.is_set():
            self.failed.set()
            self.stop_others()
            tail = log.read_text()[-3000:]
            print(f"--- {name} seed {seed} failed (exit {code}); its output ends:\n{tail}")
            raise SystemExit(f"error: run {name} seed {seed} failed (exit {code}); log: {log}")
        if code:
            return None
        sfl_batch = next(int(o.split("=")[1]) for o in row.overrides if "client_batch_size" in o)
        record = run_record(run_dir, sfl_batch, IMAGES_PER_STEP)
        print(
            f"{name} seed {seed}: test kNN {record['test_knn_top1']:.2f}  linear "
            f"{record['test_linear_top1']:.2f}  {wall / 60:.1f} min",
            flush=True,
        )
        return {
            "row": name,
            "title": row.title,
            "family": row.family,
            "split": row.split,
            "seed": seed,
            "row_overrides": list(row.overrides),
            "command": ["python", "-m", "mocosfl.train", *overrides],
            "run_dir": str(run_dir),
            "wall_s": wall,
            **record,
        }

    def stop_others(self) -> None:
        with self.lock:
            for proc in self.running:
                proc.terminate()  # only the training processes this study started


def run_all(
    settings: Settings, rows: dict[str, Row], scale: float, jobs: int, work: Path
) -> list[dict[str, Any]]:
    runs = [(n, r, s) for n, r in rows.items() for s in seeds_of(r, scale)]
    order = sorted(runs, key=lambda run: -SLOW_FIRST.get(run[1].family, 1.0))
    runner = Runner(settings, work)
    with ThreadPoolExecutor(jobs) as pool:
        records = list(pool.map(lambda run: runner.train(*run), order))
    position = {run[:1] + run[2:]: i for i, run in enumerate(runs)}  # back in the rows' order
    return sorted(records, key=lambda r: position[(r["row"], r["seed"])])


def settings_of(args: argparse.Namespace, root: str) -> Settings:
    quick = QUICK if args.quick else {}
    data = QUICK_DATA if args.quick else {}
    if args.synthetic:
        data = {**QUICK_DATA, **data}  # generated images: a small set is all there is
    return Settings(
        root=root,
        width=args.width or quick.get("width", WIDTH),
        steps=args.steps or quick.get("steps", STEPS),
        synthetic=args.synthetic,
        **{k: v for k, v in quick.items() if k not in ("width", "steps")},
        **data,
    )


def describe(settings: Settings) -> str:
    if settings.synthetic:
        return "synthetic images"
    train = settings.max_train_images or 50_000 - settings.val_images
    bank = settings.eval_train_images or train
    return (
        f"CIFAR-10 ({train:,} training images, {settings.val_images:,} val, kNN bank and probe "
        f"on {bank:,})"
    )


def study_json(args: argparse.Namespace, settings: Settings, runs: list, wall: float) -> dict:
    record = {
        **vars(settings),
        "images_per_step": IMAGES_PER_STEP,
        "data": describe(settings),
        "jobs": args.jobs,
        "seeds_scale": args.seeds_scale,
        "quick": args.quick,
    }
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, 1 thread a run, {args.jobs} at a time"
    return {
        "settings": record,
        "machine": machine,
        "git_commit": commit,
        "date": datetime.now().isoformat(timespec="seconds"),
        "wall_s": wall,
        "rows": summarize(runs),
        "runs": runs,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", metavar="ROW", help=f"a subset of: {', '.join(ROWS)}")
    parser.add_argument(
        "--seeds-scale", type=float, help="x each row's seeds, at least 1 (default 1; --quick 0)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    parser.add_argument("--root", help="CIFAR-10 image folder (default: extract ../shared/data)")
    parser.add_argument("--steps", type=int, help=f"step budget of every run (default {STEPS})")
    parser.add_argument("--width", type=int, help=f"ResNet-18 width (default {WIDTH})")
    parser.add_argument("--quick", action="store_true", help="every row once, tiny: minutes")
    parser.add_argument("--synthetic", action="store_true", help="generated images (tests)")
    parser.add_argument("--json", type=Path, help="output (default benchmarks/results/study.json)")
    parser.add_argument("--work", type=Path, help="run directories (default logs/study/<time>)")
    parser.add_argument("--markdown", action="store_true", help="print the table of --json only")
    parser.add_argument("--wandb", action="store_true", help="also log table and plot to W&B")
    parser.add_argument(
        "--add-init",
        action="store_true",
        help="measure the kNN at initialisation of the runs of --json (a study made before it "
        "was measured) and rewrite its outputs",
    )
    args = parser.parse_args(argv)
    if args.json is None:
        args.json = RESULTS / ("study_quick.json" if args.quick else "study.json")
    if args.seeds_scale is None:
        args.seeds_scale = 0.0 if args.quick else 1.0  # 0: one seed a row
    if args.jobs < 1 or args.seeds_scale < 0 or (args.steps or 1) < 1 or (args.width or 1) < 1:
        parser.error("--jobs, --steps and --width must be positive, --seeds-scale not negative")
    return args


def add_knn_at_init(settings: Settings, runs: list[dict[str, Any]], threads: int) -> float:
    """Each run's ``knn_at_init`` (val and test kNN of its network at initialisation); the
    seconds it took."""
    from _study_init import knn_at_init  # imports torch: only when measuring

    started = time.monotonic()
    keys = [(run["row"], ROWS[run["row"]], run["seed"]) for run in runs]
    measured = knn_at_init(settings, keys, threads)
    for run in runs:
        run["knn_at_init"] = measured[(run["row"], run["seed"])]
    return time.monotonic() - started


def write_outputs(study: dict[str, Any], path: Path, wandb_dir: Path | None) -> None:
    """The JSON, the plot beside it, the table (printed and beside it), W&B when asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(study, indent=1))
    png = path.with_suffix(".png")
    plot(study, png)
    table = markdown(study)
    path.with_suffix(".md").write_text(table + "\n")
    print(f"\n{table}\n\nwrote {path}, {png}, {path.with_suffix('.md')}")
    if wandb_dir:
        log_wandb(study, png, wandb_dir)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = select(args.rows)
    if args.markdown or args.add_init:
        if not args.json.is_file():
            raise SystemExit(f"error: {args.json} does not exist; run the study first")
        study = json.loads(args.json.read_text())
    if args.markdown:
        study["rows"] = {n: r for n, r in study["rows"].items() if not args.rows or n in rows}
        print(markdown(study))
        if args.wandb:
            log_wandb(study, args.json.with_suffix(".png"), args.json.parent)
        return
    if args.add_init:  # a study from before the measurement at initialisation
        fields = {f.name for f in dataclasses.fields(Settings)} - {"root"}
        synthetic = study["settings"]["synthetic"]
        with tempfile.TemporaryDirectory() as tmp:
            root = "" if synthetic else str(extracted(args.root, Path(tmp)))
            kept = {k: v for k, v in study["settings"].items() if k in fields}
            study["init_wall_s"] = add_knn_at_init(Settings(root, **kept), study["runs"], args.jobs)
        study["rows"] = summarize(study["runs"])
        write_outputs(study, args.json, args.json.parent if args.wandb else None)
        return
    work = args.work or ROOT / "logs" / "study" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = "" if args.synthetic else str(extracted(args.root, Path(tmp)))
        settings = settings_of(args, root)
        check_rows(settings, rows)
        if not args.synthetic:
            decode_once(Path(root))
        runs = run_all(settings, rows, args.seeds_scale, args.jobs, work)
        init_wall = add_knn_at_init(settings, runs, args.jobs)
    study = study_json(args, settings, runs, time.monotonic() - started)
    study["init_wall_s"] = init_wall
    write_outputs(study, args.json, work if args.wandb else None)
    print(f"runs in {work}")


if __name__ == "__main__":
    main()
