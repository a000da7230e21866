"""Every FL-SSL method (``module=flmoco|fedbyol|fedema``) trains, evaluates and resumes exactly on
MocoSFL's clock, data and callbacks."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from mocosfl.api import load_encoder
from mocosfl.config import validate_config
from mocosfl.errors import ConfigError
from mocosfl.privacy import attack_checkpoint
from mocosfl.train import train

from helpers import TINY, flat_state

METHODS = ["flmoco", "fedbyol", "fedema"]
# What each method carries from step to step besides the bank's models and optimizers.
OWN_STATE = {"flmoco": "queues.", "fedbyol": "bank.momentum.", "fedema": "bank.round_start"}


def overrides(method: str) -> list[str]:
    settings = [*TINY, f"module={method}", "~callbacks.linear_probe"]
    return settings + (["module.predictor_hidden_dim=32"] if method != "flmoco" else [])


@pytest.mark.parametrize("method", METHODS)
def test_run_trains_evaluates_and_logs_its_costs(compose_train, method):
    cfg = compose_train([*overrides(method), "trainer.max_epochs=2", "callbacks.knn.k=5"])
    validate_config(cfg)  # what the command line checks first
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    for key in ("train/loss", "val/knn_top1", "test/knn_top1", "fl/divergence"):
        assert key in saved, key
    assert 0.0 <= saved["test/knn_top1"] <= 100.0
    assert saved["fl/syncs"] == 4 and saved["global_step"] == 12  # rounds of 3 steps
    # The whole network crosses at each FedAvg, nothing crosses a cut (tests/test_flssl_costs.py
    # counts the traffic by hand).
    assert saved["cost/model_up_mb_per_client_run"] > 0
    assert saved["cost/latents_up_mb_per_client_run"] == saved["cost/latent_numel"] == 0
    encoder = load_encoder(out / "checkpoints" / "final.ckpt")
    assert encoder(torch.randn(2, 3, 16, 16)).shape == (2, cfg.model.width * 8)
    with pytest.raises(ConfigError, match="needs a split model"):  # no latents to invert
        attack_checkpoint(str(out / "checkpoints" / "final.ckpt"))


@pytest.mark.parametrize("method", METHODS)
def test_resume_mid_round_continues_exactly(compose_train, tmp_path, method):
    common = [*overrides(method), "~callbacks.knn", "trainer.max_steps=8"]
    common += ["callbacks.checkpoint.every_n_train_steps=100"]  # only the signal saves at 4
    straight = compose_train(common)
    train(straight)

    interrupted = compose_train(common)
    interrupted.paths.output_dir = str(tmp_path / "interrupted")
    with open_dict(interrupted):
        interrupted.callbacks.interrupt = {"_target_": "test_train.InterruptAt", "step": 4}
    assert train(interrupted)["step"] == 4  # mid-round: rounds end after steps 3 and 6
    checkpoint = tmp_path / "interrupted" / "checkpoints" / "last.ckpt"
    resumed = compose_train([*common, f"ckpt_path={checkpoint}"])
    resumed.paths.output_dir = str(tmp_path / "resumed")
    train(resumed)

    want = flat_state(Path(straight.paths.output_dir) / "checkpoints" / "last.ckpt")
    got = flat_state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert want.keys() == got.keys()
    assert any(k.startswith("opt/client") for k in want)
    assert any(k.startswith(f"model/{OWN_STATE[method]}") for k in want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
