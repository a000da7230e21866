"""benchmarks/step_time.py: its smallest run prints every measurement's ratio to centralized MoCo,
and what it trains comes from conf/train.yaml."""

import json
import re
import subprocess
import sys

import pytest

from helpers import ROOT, compose

TINY_BENCH = [
    "--clients=2",
    "--engines=vmap",
    "--width=8",
    "--image-size=16",
    "--server-batch=4",
    "--queue-size=8",
    "--steps=1",
    "--warmup=1",
]


@pytest.mark.slow  # a fresh Python process
def test_smallest_run_prints_its_ratios(tmp_path):
    """In one process (``--in-process``); the README test runs ``make bench``, a process a
    measurement."""
    out = tmp_path / "step_time.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/step_time.py", *TINY_BENCH, "--in-process", f"--json={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "ratio to centralized" in done.stdout
    printed = dict(re.findall(r"^(centralized|vmap) .*?(\d+\.\d\d)x", done.stdout, re.MULTILINE))
    assert printed["centralized"] == "1.00"
    result = json.loads(out.read_text())
    rows = {row["engine"]: row for row in result["rows"]}
    assert rows["vmap"]["pool"] == 2 and rows["vmap"]["images_per_client"] == 2
    ratio = rows["vmap"]["median_ms"] / rows["centralized"]["median_ms"]
    assert rows["vmap"]["ratio_to_centralized"] == pytest.approx(ratio)
    assert printed["vmap"] == f"{ratio:.2f}"
    # The module's settings are conf/train.yaml's, not copies of them.
    conf = compose("train", tmp_path / "run", [])
    module = result["config"]["train_config"]["module"]
    for key in ("temperature", "ema_decay", "head_hidden_dim", "head_out_dim"):
        assert module[key] == conf.module[key]
    assert module["server_optimizer"]["lr"] == conf.sfl.lr


def test_paper_takes_the_configs_defaults(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from step_time import parse_args

    args = parse_args(["--paper"])
    conf = compose("train", tmp_path / "run", [])
    assert (args.arch, args.width, args.cut_layer) == (
        conf.model.arch,
        conf.model.width,
        conf.sfl.cut_layer,
    )
    assert args.server_batch == conf.sfl.clients_per_step * conf.sfl.client_batch_size
    with pytest.raises(SystemExit):
        parse_args(["--paper", "--width", "8"])
    # The paper's network, cut after a block (gpu_check.sh times both cuts).
    cut2 = parse_args(["--paper", "--cut-layer", "2"])
    assert (cut2.cut_layer, cut2.width, cut2.server_batch) == (2, args.width, args.server_batch)
