"""The standalone evaluation and the public API on tiny checkpoints: the same probe as the
callback (same numbers), the run's data split rebuilt, one-line errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mocosfl.callbacks.feature_cache as feature_cache
from mocosfl import load_datamodule, load_encoder, load_module
from mocosfl.errors import ConfigError
from mocosfl.eval import evaluate
from mocosfl.evaluation import ProbeSettings, balanced_subset, extract_features
from mocosfl.train import train

from helpers import ROOT, TINY, compose_eval

CALLBACK_PROBE = {"head": "linear", "epochs": 7, "lr": 0.01, "batch_size": 16, "standardize": True}


@pytest.fixture
def tiny_run(compose_train, monkeypatch):
    """A 2-epoch run whose probe and kNN monitor run every epoch; FedAvg every 5 steps, so the
    last epoch ends mid-round. Returns (config, metrics, number of feature extractions)."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return extract_features(*args, **kwargs)

    monkeypatch.setattr(feature_cache, "extract_features", counting)
    probe = ",".join(f"{k}:{v}" for k, v in CALLBACK_PROBE.items())
    cfg = compose_train(
        [
            *TINY,
            "trainer.max_epochs=2",
            "sfl.sync_every=5",
            "callbacks.knn.k=5",
            "callbacks.linear_probe.every_n_epochs=1",
            f"callbacks.linear_probe.probe={{{probe}}}",
        ]
    )
    metrics = train(cfg)
    return cfg, metrics, len(calls)


def test_eval_gives_the_callbacks_numbers(tiny_run, tmp_path):
    cfg, metrics, extractions = tiny_run
    # Per epoch end: train + val features, shared by kNN and probe; at the end only test is new.
    assert extractions == 2 * 2 + 1
    for key in ("val/linear_top1", "test/linear_top1", "val/knn_top1", "test/knn_top1"):
        assert 0.0 <= metrics[key] <= 100.0, key
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "final.ckpt"
    callback_probe = cfg.callbacks.linear_probe.probe
    probe = [f"eval.probe.{k}={v}" for k, v in callback_probe.items()]
    eval_cfg = compose_eval(tmp_path / "linear", [f"ckpt_path={ckpt}", "eval=linear", *probe])
    assert ProbeSettings.from_config(eval_cfg.eval.probe) == ProbeSettings.from_config(
        callback_probe
    )
    linear = evaluate(eval_cfg)
    assert linear["val/linear_top1"] == metrics["val/linear_top1"]
    assert linear["test/linear_top1"] == metrics["test/linear_top1"]
    assert linear["seed"] == cfg.seed and linear["eval"] == "linear"
    assert json.loads((tmp_path / "linear" / "metrics.json").read_text()) == linear
    saved = json.loads((tmp_path / "linear" / "probe.json").read_text())
    assert len(saved["val_curve"]) == 7 and len(saved["test_per_class"]) == 10
    assert saved["test_top1"] == metrics["test/linear_top1"]

    knn = evaluate(compose_eval(tmp_path / "knn", [f"ckpt_path={ckpt}", "eval=knn", "eval.k=5"]))
    assert knn["val/knn_top1"] == metrics["val/knn_top1"]
    assert knn["test/knn_top1"] == metrics["test/knn_top1"]


@pytest.mark.parametrize("preset, fraction", [("semi10", 0.1), ("semi1", 0.01)])
def test_semi_supervised_presets(compose_train, tmp_path, preset, fraction):
    cfg = compose_train([*TINY, "~callbacks.knn", "~callbacks.linear_probe", "trainer.max_steps=3"])
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "final.ckpt"
    out = evaluate(
        compose_eval(
            tmp_path / preset, [f"ckpt_path={ckpt}", f"eval={preset}", "eval.probe.epochs=3"]
        )
    )
    assert 0.0 <= out[f"test/{preset}_top1"] <= 100.0
    saved = json.loads((tmp_path / preset / "probe.json").read_text())
    datamodule = load_datamodule(ckpt)
    datamodule.setup()
    labels = datamodule.split_images("train")[1]
    assert saved["num_labelled"] == len(balanced_subset(labels, fraction, cfg.seed))
    assert saved["classes"] and len(saved["test_confusion"]) == 10


def test_load_encoder_and_datamodule_round_trip(compose_train):
    cfg = compose_train([*TINY, "~callbacks.knn", "~callbacks.linear_probe", "trainer.max_steps=3"])
    train(cfg)
    out = Path(cfg.paths.output_dir)
    ckpt = out / "checkpoints" / "final.ckpt"

    module = load_module(ckpt)
    full = load_module(out / "checkpoints" / "last.ckpt")  # the full state of the same step
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["format"] == "mocosfl-final" and saved["global_step"] == 3
    for name, value in module.server.state_dict().items():
        torch.testing.assert_close(value, full.server.state_dict()[name], rtol=0, atol=0)

    datamodule = load_datamodule(ckpt, num_workers=0, eval_batch_size=7)
    datamodule.setup()
    partition = np.load(out / "partition.npz")
    for key, value in datamodule.partition_state().items():
        np.testing.assert_array_equal(value, partition[key], err_msg=key)
    images, _ = next(iter(datamodule.eval_dataloader("test")))
    assert images.shape == (7, 3, 16, 16)

    encoder = load_encoder(ckpt)
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    feats = encoder(images)
    assert feats.shape == (7, module.feature_dim)
    torch.testing.assert_close(feats, module.encoder("backbone")(images), rtol=0, atol=0)
    torch.testing.assert_close(feats, full.encoder("backbone")(images), rtol=0, atol=0)
    assert load_encoder(ckpt, feature="head")(images).shape == (7, 16)


class Pickled:
    """Any Python object: unpickling it could run code."""


def test_every_checkpoint_loads_without_pickle_and_a_pickled_one_is_refused(
    compose_train, tmp_path
):
    cfg = compose_train(
        [*TINY, "~callbacks.knn", "~callbacks.linear_probe", "trainer.max_steps=4"]
        + [
            "callbacks.checkpoint.every_n_train_steps=2",
            "callbacks.checkpoint.keep_every_n_steps=2",
        ]
    )
    train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == ["final.ckpt", "last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt"]
    for path in checkpoints.iterdir():
        torch.load(path, map_location="cpu", weights_only=True)
        load_encoder(path)
    # final.ckpt holds one client model and no queue or optimizer state.
    assert (checkpoints / "final.ckpt").stat().st_size < (
        checkpoints / "last.ckpt"
    ).stat().st_size / 2

    torch.save({"run_config": {}, "payload": Pickled()}, tmp_path / "pickled.ckpt")
    with pytest.raises(ConfigError, match="pickled Python objects") as err:
        load_module(tmp_path / "pickled.ckpt")
    assert "\n" not in str(err.value)


def test_api_errors_are_config_errors(compose_train, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_encoder(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_module(tmp_path / "junk.ckpt")
    cfg = compose_train([*TINY, "~callbacks.knn", "~callbacks.linear_probe", "trainer.max_steps=1"])
    train(cfg)
    with pytest.raises(ConfigError, match="unknown data setting"):
        load_datamodule(Path(cfg.paths.output_dir) / "checkpoints" / "final.ckpt", rooot="/x")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([], "ckpt_path is required"),
        (["ckpt_path=/x.ckpt", "+eval.probe.depth=3"], "unknown probe setting(s) depth"),
        (["ckpt_path=/x.ckpt", "eval.probe.head=resnet"], "probe.head='resnet'"),
    ],
)
def test_eval_config_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        evaluate(compose_eval(tmp_path, overrides))


def test_eval_cli_missing_checkpoint_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mocosfl.eval", "ckpt_path=/nonexistent/final.ckpt", "logger=csv"]
        + [f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "error: ckpt_path=/nonexistent/final.ckpt does not exist", result.stderr
    assert "Traceback" not in result.stderr
