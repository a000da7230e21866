"""Which initialisation and blur learn better per step: the measurement behind their defaults.

Trains ``experiment=cifar10_quick`` (real CIFAR-10, 120 steps, 1 thread) for every combination
of ``model.init`` (xavier, legacy) and ``data.blur`` (kernel10, pil) and a few seeds, each run a
process of its own, ``--jobs`` at a time, and prints the test kNN top-1 of every run with the
mean and standard deviation per setting. docs/differences.md gives the numbers this printed.

    .venv/bin/python benchmarks/init_blur_choice.py                  # 3 seeds, 2 at a time
    .venv/bin/python benchmarks/init_blur_choice.py --seeds 1 2 --root data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
INITS = ("xavier", "legacy")
BLURS = ("kernel10", "pil")


def train_once(root: Path, out: Path, init: str, blur: str, seed: int) -> float:
    """One training process; returns its test kNN top-1 (%)."""
    run_dir = out / f"{init}-{blur}-{seed}"
    command = [
        sys.executable,
        "-m",
        "mocosfl.train",
        "experiment=cifar10_quick",
        f"data.root={root}",
        f"model.init={init}",
        f"data.blur={blur}",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads((run_dir / "metrics.json").read_text())["test/knn_top1"]


def extracted(root: str | None, tmp: Path) -> Path:
    if root:
        return Path(root)
    if not ARCHIVE.is_file():
        raise SystemExit(f"error: give --root <CIFAR-10 image folder>; {ARCHIVE} does not exist")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(tmp, filter="data")
    return tmp / "cifar10-jpeg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="CIFAR-10 image folder (default: extract ../shared/data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234, 1235, 1236])
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/init_blur.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = extracted(args.root, Path(tmp))
        runs = list(itertools.product(INITS, BLURS, args.seeds))
        with ThreadPoolExecutor(args.jobs) as pool:
            top1 = list(pool.map(lambda r: train_once(root, Path(tmp), *r), runs))
    results = {}
    for (init, blur, seed), value in zip(runs, top1):
        results.setdefault(f"init={init} blur={blur}", {})[seed] = value
    print(f"test kNN top-1 (%), experiment=cifar10_quick, seeds {args.seeds}")
    for setting, by_seed in results.items():
        values = list(by_seed.values())
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells = "  ".join(f"{v:5.2f}" for v in values)
        print(f"  {setting:28s} {cells}   mean {statistics.mean(values):5.2f} ± {spread:4.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"seeds": args.seeds, "test_knn_top1": results}, indent=1))


if __name__ == "__main__":
    main()
