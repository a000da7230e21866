"""The Hydra entry point end to end on synthetic data: outputs, exact resume, bad input."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from mocosfl.train import train
from mocosfl.utils.history import read_history

from helpers import TINY, flat_state, run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_train_writes_metrics_checkpoints_and_partition(compose_train):
    cfg = compose_train([*TINY, "trainer.max_epochs=2", "callbacks.knn.k=5"])
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    for key in ("train/loss", "val/knn_top1", "test/knn_top1", "fl/divergence", "fl/syncs"):
        assert key in saved, key
    assert 0.0 <= saved["test/knn_top1"] <= 100.0
    assert saved["fl/syncs"] == 4  # 12 steps in rounds of 3
    assert saved["seed"] == 1234 and saved["global_step"] == 12
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "checkpoints" / "final.ckpt").is_file()
    run_config = torch.load(out / "checkpoints" / "final.ckpt", weights_only=True)["run_config"]
    assert run_config["paths"]["output_dir"] == str(out)
    parts = dict(__import__("numpy").load(out / "partition.npz"))
    assert parts, "partition.npz is empty"
    assert (out / "partition.png").is_file()


class InterruptAt(L.Callback):
    """Sends this process ``signum`` at the end of step ``step``, as Ctrl-C or ``kill`` would."""

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(
    "k, workers, signum",
    [
        (6, 0, signal.SIGINT),
        (4, 0, signal.SIGTERM),
        pytest.param(4, 2, signal.SIGINT, marks=pytest.mark.slow),
    ],
    ids=["epoch-boundary-sigint", "mid-round-sigterm", "mid-round-2-workers"],
)
def test_resume_continues_exactly(compose_train, tmp_path, k, workers, signum):
    """2k steps in one go equal k steps, a signal, and a resume from the last.ckpt it wrote."""
    common = [*TINY, "~callbacks.knn", f"data.num_workers={workers}", f"trainer.max_steps={2 * k}"]
    common += ["callbacks.checkpoint.every_n_train_steps=100"]  # only the signal saves at k

    straight = compose_train(common)
    train(straight)
    straight_ckpt = Path(straight.paths.output_dir) / "checkpoints" / "last.ckpt"

    interrupted = compose_train(common)
    interrupted.paths.output_dir = str(tmp_path / "interrupted")
    with open_dict(interrupted):
        interrupted.callbacks.interrupt = {
            "_target_": f"{__name__}.InterruptAt",
            "step": k,
            "signum": int(signum),
        }
    stopped = train(interrupted)
    assert stopped["interrupted"] == signal.Signals(signum).name and stopped["step"] == k
    checkpoint = tmp_path / "interrupted" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == k
    resumed = compose_train([*common, f"ckpt_path={checkpoint}"])
    resumed.paths.output_dir = str(tmp_path / "resumed")
    train(resumed)
    resumed_ckpt = tmp_path / "resumed" / "checkpoints" / "last.ckpt"

    want, got = flat_state(straight_ckpt), flat_state(resumed_ckpt)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)


BAD_INPUT = [
    (["sfl.num_clients=100000"], "clients"),
    (["sfl.clients_per_step=5", "sfl.num_clients=4"], "clients_per_step"),
    (["ckpt_path=/nonexistent/last.ckpt"], "does not exist"),
    (["data=imagefolder", "data.root=/nonexistent/folder"], "/nonexistent/folder"),
    (["model.norm=bn", "sfl.client_batch_size=1"], "client_batch_size >= 8"),
    (["~callbacks.fedavg"], "sfl.sync_every=0"),
    (["data.val_images=0"], "no validation split for callbacks.knn"),
]


def bad_input_command(tmp_path: Path, overrides: list[str]) -> list[str]:
    """A tiny run with ``overrides`` in place of TINY's settings of the same keys."""
    keys = [o.split("=")[0] for o in overrides]
    tiny = [o for o in TINY if not any(o.startswith((f"{k}=", f"{k}.")) for k in keys)]
    return [*tiny, f"hydra.run.dir={tmp_path / 'run'}", *overrides]


def assert_one_error_line(code: int, stderr: str, message: str, run_dir: Path) -> None:
    assert code == 2, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], stderr[-2000:]
    assert "Traceback" not in stderr
    assert not run_dir.exists(), "a refused command left its run directory"


@pytest.mark.slow  # a fresh Python process
def test_bad_input_is_one_clear_line_from_a_fresh_process(tmp_path):
    result = run_cli(*bad_input_command(tmp_path, ["sfl.cut_layer=99"]))
    assert_one_error_line(
        result.returncode, result.stderr, "valid cut layers are 1..8", tmp_path / "run"
    )


@pytest.mark.parametrize("overrides, message", BAD_INPUT)
def test_bad_input_is_one_clear_line(tmp_path, train_cli, overrides, message):
    """The same entry point run in this process (the fresh process above shows that nothing
    differs but the seconds of imports)."""
    code, stderr = train_cli(*bad_input_command(tmp_path, overrides))
    assert_one_error_line(code, stderr, message, tmp_path / "run")


def test_without_a_validation_split_the_test_kNN_is_still_measured(compose_train):
    """data.val_images=0 trains on every training image, as the original does."""
    cfg = compose_train(
        [*TINY, "data.val_images=0", "callbacks.knn.every_n_epochs=0", "~callbacks.linear_probe"]
        + ["trainer.max_steps=2"]
    )
    metrics = train(cfg)
    assert "test/knn_top1" in metrics and "val/knn_top1" not in metrics


def test_the_kNN_monitor_every_n_steps_makes_a_curve_within_an_epoch(compose_train):
    """callbacks.knn.every_n_steps=2 over 5 steps of a 6-step epoch: val kNN at steps 2 and 4,
    none at the epoch's end (not reached); data.eval_train_images caps the bank."""
    cfg = compose_train(
        [*TINY, "callbacks.knn.every_n_epochs=0", "callbacks.knn.every_n_steps=2"]
        + ["~callbacks.linear_probe", "data.eval_train_images=20", "trainer.max_steps=5"]
    )
    metrics = train(cfg)
    rows = read_history(Path(cfg.paths.output_dir) / "history.csv")
    assert [int(r["step"]) for r in rows if "val/knn_top1" in r] == [2, 4]
    assert "test/knn_top1" in metrics


@pytest.mark.parametrize("group, value", [("data", "mnist"), ("model", "resnet9")])
def test_unknown_dataset_or_model_lists_the_choices(tmp_path, train_cli, group, value):
    code, stderr = train_cli(f"{group}={value}", f"hydra.run.dir={tmp_path}")
    assert code != 0
    assert f"Could not find '{group}/{value}'" in stderr
    assert "Available options" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_bf16_mixed_precision_trains(compose_train, engine):
    cfg = compose_train(
        [*TINY, "~callbacks.knn", "trainer.max_steps=3", "trainer.precision=bf16-mixed"]
        + [f"sfl.client_engine={engine}"]
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_trains_on_gpu_with_bf16(compose_train, engine):
    cfg = compose_train(
        [*TINY, "trainer=gpu", "trainer.max_steps=6", "callbacks.knn.k=5", "trainer.devices=1"]
        + [f"sfl.client_engine={engine}"]
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/knn_top1"] <= 100.0


@pytest.mark.slow
def test_wandb_logger_runs_offline_without_api_key(tmp_path):
    """As a user without a W&B key runs it: a fresh process, no WANDB_MODE, no key anywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp_path / "no-netrc"), HOME=str(tmp_path))
    overrides = [*TINY, "~callbacks.knn", "~callbacks.linear_probe", "trainer.max_steps=2"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mocosfl.train",
            *overrides,
            "logger=wandb",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "run").rglob("offline-run-*")), (
        "no offline W&B run in the run directory"
    )
