"""benchmarks/deploy_latency.py: its smallest run splits a deployed step into parts that add up
to the step, and sets the bytes on the wire beside the cost accounting's."""

import json
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow  # fresh Python processes
def test_smallest_run_splits_the_step_and_counts_the_wire(tmp_path):
    out = tmp_path / "deploy_latency.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "deploy_latency.py"), "--clients", "2"]
    command += ["--modes", "simulation", "processes", "--steps", "3", "--warmup", "1"]
    command += ["--sync-every", "2", "--width", "8", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "seconds a step" in done.stdout and "MB on the wire" in done.stdout

    results = json.loads(out.read_text())["steps"]["2"]
    assert results["simulation"]["split"]["wall"] > 0
    split = results["processes"]["split"]
    parts = [split[p] for p in ("client", "transport", "server")]
    assert all(p >= 0 for p in parts) and sum(parts) == pytest.approx(split["wall"])
    traffic = results["processes"]["traffic"]
    for part in ("latents_up", "gradients_down", "model_up"):
        assert traffic[part]["wire_mb"] == pytest.approx(traffic[part]["computed_mb"], rel=1e-4)
    # 4 steps are 2 rounds: the first average reaches the second round's clients, the last stays.
    down = traffic["model_down"]
    assert down["wire_mb"] == pytest.approx(down["computed_mb"] / 2, rel=1e-4)
