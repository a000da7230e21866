"""DDP: two CPU processes (gloo) launched by the entry point give the numbers of one process.

Each step's pool is split over the processes, the server's gradients are all-reduced by DDP, the
clients' state is exchanged after every step and the keys of both processes enter the queue.
"""

import csv
from pathlib import Path

import pytest
import torch

from helpers import TINY, run_cli

CHANGED = ("trainer=", "sfl.num_clients", "sfl.clients_per_step", "sfl.client_batch_size")
SMALL = [
    *(o for o in TINY if not o.startswith(CHANGED)),
    "~callbacks.knn",
    "~callbacks.linear_probe",
    "sfl.num_clients=6",
    "sfl.clients_per_step=4",
    "sfl.client_batch_size=2",
    "trainer.accelerator=cpu",
    "trainer.max_steps=8",
    "trainer.log_every_n_steps=1",
]  # 2 of the pool's 4 clients a process; FedAvg after steps 3 and 6 and at the end


def step_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        return {
            int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]
        }


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def train_both(tmp_path: Path, *overrides: str) -> tuple[Path, Path]:
    """The same run in one process and in two (trainer=ddp); returns both run directories."""
    runs = {"one": [], "two": ["trainer=ddp", "trainer.devices=2"]}
    for name, extra in runs.items():
        done = run_cli(*SMALL, *overrides, *extra, f"hydra.run.dir={tmp_path / name}")
        assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "one", tmp_path / "two"


@pytest.mark.slow  # fresh Python processes
def test_two_processes_give_the_losses_of_one(tmp_path):
    one, two = train_both(tmp_path)
    want, got = step_losses(one), step_losses(two)
    assert sorted(want) == sorted(got) == list(range(8))
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-4), step
    assert (two / "metrics.json").is_file()


@pytest.mark.slow
def test_two_processes_with_the_vmap_engine_match_one_in_float64(tmp_path):
    """Every weight, momentum copy and queue entry, after FedAvg and the exchanges."""
    one, two = train_both(tmp_path, "trainer.precision=64-true", "sfl.client_engine=vmap")
    want, got = final_state(one), final_state(two)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.slow
def test_a_pool_that_does_not_split_evenly_is_refused_before_training(tmp_path):
    done = run_cli(*SMALL, "trainer=ddp", "sfl.clients_per_step=3", f"hydra.run.dir={tmp_path}")
    assert done.returncode != 0
    assert "sfl.clients_per_step=3 cannot be split evenly over 2 processes" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "checkpoints").exists()
