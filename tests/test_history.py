"""The run's own record: history.csv and curves.png, the collapse alarm, the progress lines."""

import csv
import logging
import warnings
from pathlib import Path

import lightning as L
import torch
from omegaconf import open_dict

from mocosfl.train import train
from mocosfl.utils.history import HistoryLogger, read_history

from helpers import TINY


def test_history_keeps_every_scalar_at_its_step_and_a_resume_replaces_the_rest(tmp_path):
    logger = HistoryLogger(tmp_path)
    logger.log_metrics({"train/loss": 3.0}, step=0)
    logger.log_metrics({"train/loss": 2.5}, step=1)
    logger.log_metrics({"val/knn_top1": 40.0, "epoch": 0}, step=1)  # a new column, same step
    logger.log_metrics({"train/loss": 2.0, "vector": torch.ones(3)}, step=2)
    logger.finalize("success")
    rows = read_history(tmp_path / "history.csv")
    assert rows == [
        {"step": 0, "train/loss": 3.0},
        {"step": 1, "train/loss": 2.5, "val/knn_top1": 40.0},
        {"step": 2, "train/loss": 2.0},
    ]
    assert (tmp_path / "curves.png").stat().st_size > 0

    resumed = HistoryLogger(tmp_path)  # resumed from step 1: it logs step 1 on again
    resumed.log_metrics({"train/loss": 2.4}, step=1)
    resumed.finalize("success")
    assert read_history(tmp_path / "history.csv") == [
        {"step": 0, "train/loss": 3.0},
        {"step": 1, "train/loss": 2.4},
    ]


def test_every_run_writes_its_history_and_curves(compose_train):
    cfg = compose_train([*TINY, "trainer.max_steps=12", "trainer.log_every_n_steps=1"])
    train(cfg)
    out = Path(cfg.paths.output_dir)
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [r for r in rows if r["train/loss"]]
    assert len(losses) == 12 and "val/knn_top1" in rows[0] and "fl/syncs" in rows[0]
    assert any(r["val/knn_top1"] for r in rows)
    assert (out / "curves.png").stat().st_size > 0


class ZeroServer(L.Callback):
    """Zeroes the server's weights before every step: every image gets the same feature."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with torch.no_grad():
            for p in pl_module.server.parameters():
                p.zero_()


def collapse_warnings(cfg) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    return [str(w.message) for w in caught if "collapsed" in str(w.message)]


def test_the_collapse_alarm_fires_on_collapse_only(compose_train, tmp_path, monkeypatch):
    monkeypatch.setattr("mocosfl.sfl.module.COLLAPSE_CHECK_EVERY", 4)  # 12 steps hold 3 checks
    common = [*TINY, "~callbacks.knn", "~callbacks.linear_probe", "trainer.max_steps=12"]
    healthy = compose_train(common)
    assert collapse_warnings(healthy) == []
    collapsed = compose_train(common)
    collapsed.paths.output_dir = str(tmp_path / "collapsed")
    with open_dict(collapsed):
        collapsed.callbacks.zero = {"_target_": f"{__name__}.ZeroServer"}
    (message,) = collapse_warnings(collapsed)
    assert "lower sfl.lr" in message


def test_plain_progress_lines_when_stdout_is_not_a_terminal(compose_train, caplog):
    cfg = compose_train(
        [*(o for o in TINY if o != "~callbacks.progress"), "trainer.max_steps=7"]
        + ["callbacks.progress.every_n_steps=3", "~callbacks.knn", "~callbacks.linear_probe"]
    )
    with caplog.at_level(logging.INFO, logger="mocosfl"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split()[1] for line in lines] == ["3/7", "6/7", "7/7"]
    assert "epoch 2/2" in lines[-1] and "loss " in lines[-1] and "steps/s" in lines[-1]


def test_a_relative_data_root_is_stored_absolute(compose_train, tmp_path, monkeypatch):
    from mocosfl.train import run_config_of

    monkeypatch.chdir(tmp_path)
    cfg = compose_train(["data=imagefolder", "data.root=data/cifar10-jpeg"])
    assert run_config_of(cfg)["data"]["root"] == str(tmp_path / "data" / "cifar10-jpeg")


class FakeTrainer:
    max_epochs, max_steps, num_training_batches, current_epoch = 200, 20, 6, 0

    def __init__(self) -> None:
        self.progress_bar_metrics = {"train/loss": 3.21, "train/contrastive_acc": 40.0, "v_num": 0}


def test_the_bar_counts_the_epochs_the_budget_allows_and_shows_short_names():
    from mocosfl.callbacks.progress import StepProgressBar, planned_epochs

    bar = StepProgressBar()
    trainer = FakeTrainer()
    assert planned_epochs(trainer) == 4  # max_steps=20 ends the run in the 4th epoch, not 200
    bar._trainer = trainer
    assert bar._get_train_description(0) == "Epoch 1/4"
    assert bar.get_metrics(trainer, None) == {"loss": "3.21", "acc": "40"}
