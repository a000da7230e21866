"""Ctrl-C and SIGTERM as a user sends them to ``python -m mocosfl.train``, then a resume.

Each run is a fresh process whose stdout is a pipe, so it prints a plain progress line a step;
the signal goes in when a chosen step is reported, wherever the run then is in that step.
"""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY, flat_state

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12
RUN = [
    *(o for o in TINY if o != "~callbacks.progress"),
    "~callbacks.knn",
    "~callbacks.linear_probe",
    f"trainer.max_steps={STEPS}",
    "callbacks.progress.every_n_steps=1",
    "callbacks.checkpoint.every_n_train_steps=100",  # only the signal and the end save
]
pytestmark = pytest.mark.slow  # fresh Python processes


def command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "mocosfl.train", *overrides]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", **extra}


def run(*overrides: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*overrides),
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=environment(**env),
    )


def interrupt_at(step: int, signum: int, *overrides: str, **env: str) -> tuple[int, str]:
    """Start a run, send ``signum`` when it reports ``step``; (exit code, stdout + stderr)."""
    process = subprocess.Popen(
        command(*overrides),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=environment(**env),
    )
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(f"step {step}/"):
            process.send_signal(signum)
            break
    rest, _ = process.communicate(timeout=300)
    return process.returncode, "".join(seen) + rest


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The run that is never stopped."""
    run_dir = tmp_path_factory.mktemp("straight")
    assert run(*RUN, f"hydra.run.dir={run_dir}").returncode == 0
    return run_dir


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_saves_the_step_and_a_resume_equals_an_uninterrupted_run(tmp_path, straight, signum):
    stopped = tmp_path / "stopped"
    extra = ["logger=wandb"] if signum == signal.SIGTERM else []
    code, out = interrupt_at(
        5, signum, *RUN, *extra, f"hydra.run.dir={stopped}", WANDB_MODE="offline"
    )
    assert code == 128 + signum, out[-3000:]
    saved_at = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 5 <= saved_at < STEPS, out[-3000:]  # the step that was running, finished
    assert f"stopped by {signal.Signals(signum).name} after step {saved_at}" in out
    assert f"python -m mocosfl.train resume={stopped}" in out
    assert "Traceback" not in out

    # The resume names only the run directory: settings, run directory and W&B run come back.
    resumed = run(f"resume={stopped}", WANDB_MODE="offline")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = (
        flat_state(straight / "checkpoints" / "last.ckpt"),
        flat_state(stopped / "checkpoints" / "last.ckpt"),
    )
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)

    with open(stopped / "history.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # one row a step, no repeats
    assert (stopped / "curves.png").stat().st_size > 0
    # How the run was started stays in .hydra; the resume's own config goes beside it.
    assert "resume=" not in (stopped / ".hydra" / "overrides.yaml").read_text()
    assert len(list((stopped / ".hydra").glob("resume_*/overrides.yaml"))) == 1
    if extra:  # the same W&B run id for both parts
        offline = sorted(p.name for p in (stopped / "wandb").glob("offline-run-*"))
        run_id = (stopped / "wandb_run_id").read_text().strip()
        assert len(offline) == 2 and all(name.endswith(run_id) for name in offline)


def test_a_resume_that_changes_the_saved_state_is_refused_in_one_line(tmp_path, train_cli):
    """The console entry in this process: the refusal comes before any signal handling."""
    run_dir = tmp_path / "run"
    code, stderr = train_cli(*RUN, "trainer.max_steps=2", f"hydra.run.dir={run_dir}")
    assert code == 0, stderr[-3000:]
    for overrides, message in [
        (["model.width=16", "sfl.num_clients=6"], "model.width 8 -> 16, sfl.num_clients 4 -> 6"),
        (["sfl=legacy"], "drop sfl=legacy (the run has fixed)"),
    ]:
        code, stderr = train_cli(f"resume={run_dir}", *overrides)
        assert code == 2, stderr[-3000:]
        lines = stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
        assert "Traceback" not in stderr and "size mismatch" not in stderr
    # A change that keeps the shapes is taken: more steps, a new learning rate.
    code, stderr = train_cli(f"resume={run_dir}", "trainer.max_steps=4", "sfl.lr=0.01")
    assert code == 0, stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert ckpt["run_config"]["module"]["server_optimizer"]["lr"] == 0.01  # the link is kept
