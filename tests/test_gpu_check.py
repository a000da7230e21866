"""benchmarks/gpu_check.sh: its --tiny run (the GPU check's every stage, on the CPU at toy sizes)
writes every measurement, and a wrong option is one line."""

import json
import math
import os
import subprocess
import sys

import pytest

from helpers import ROOT

SCRIPT = "benchmarks/gpu_check.sh"
SETTINGS = [(1, "32-true"), (1, "bf16-mixed"), (2, "32-true"), (2, "bf16-mixed")]
CELLS = ["loop 10", "vmap 10", "loop 20", "vmap 20"]


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # about a minute: one process for the step times, one per training run
@pytest.mark.long(seconds=75)
def test_tiny_run_writes_every_measurement(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    env.pop("OUT", None)
    done = subprocess.run(
        ["bash", SCRIPT, "--tiny", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    # What comes back from the GPU machine: at most 8 plain files, none in a folder.
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "centralized_history.csv",
        "gpu_check.json",
        "log.txt",
        "mocosfl_history.csv",
        "summary.txt",
    ]
    summary = (out / "summary.txt").read_text()
    assert summary.strip() in done.stdout
    assert "1. step time" in summary and "2. training" in summary and "FAILED" not in summary

    report = json.loads((out / "gpu_check.json").read_text())
    assert report["missing"] == []
    assert report["clients"] == [10, 20]
    assert [(b["cut_layer"], b["precision"]) for b in report["bench"]] == SETTINGS
    for entry in report["bench"]:
        assert positive(entry["centralized_ms"])
        assert sorted(entry["ratios"]) == sorted(CELLS)
        assert all(positive(entry["ratios"][cell]) for cell in CELLS)
        assert [t["clients"] for t in entry["targets"]] == [10, 20]
        for target in entry["targets"]:
            assert target["faster_engine"] in ("loop", "vmap") and positive(target["ratio"])
        step_time = entry["step_time"]
        assert step_time["failures"] == []
        config = step_time["config"]
        assert config["cut_layer"] == entry["cut_layer"]
        assert config["precision"] == entry["precision"]
        assert (config["width"], config["server_batch"], config["loss"]) == (4, 10, "two_way")
        for raw in step_time["raw"]:
            assert len(raw["ms"]) == 2 and all(map(positive, raw["ms"]))

    runs = report["train"]
    assert list(runs) == ["mocosfl", "centralized"]
    shapes = {name: run["config"] for name, run in runs.items()}
    assert shapes["mocosfl"]["num_clients"] == shapes["mocosfl"]["clients_per_step"] == 10
    assert shapes["mocosfl"]["client_batch_size"] == 1
    assert (shapes["centralized"]["num_clients"], shapes["centralized"]["client_batch_size"]) == (
        1,
        10,
    )
    for run in runs.values():
        assert run["steps"] == 5
        assert 0 <= run["test_knn_top1"] <= 100
        assert math.isfinite(run["train_loss"])
        assert (run["config"]["cut_layer"], run["config"]["precision"]) == (1, "bf16-mixed")


def test_an_unknown_option_is_one_line():
    done = subprocess.run(
        ["bash", SCRIPT, "--tiny", "--fast"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown option --fast (bash benchmarks/gpu_check.sh --help lists them)"
    ]
