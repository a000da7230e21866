"""The model-inversion attack: it succeeds against a client that keeps the image, fails against
one that destroys it, and the callback, the entry point and the API give the same numbers."""

import io
import json
import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mocosfl.attack import attack
from mocosfl.data import build_datamodule
from mocosfl.data.image_set import DATASET_STATS
from mocosfl.data.synthetic import make_synthetic
from mocosfl.errors import ConfigError
from mocosfl.privacy import AttackSettings, Decoder, run_attack, select_attack_images
from mocosfl.privacy.attack import MIN_AUX_IMAGES, warn_if_few_aux
from mocosfl.train import train

from helpers import ROOT, TINY, compose_attack

MEAN, STD = DATASET_STATS["synthetic"]
NARROW = AttackSettings(steps=300, width=8, num_blocks=1)  # seconds on one CPU thread


@pytest.mark.parametrize(
    "latent, size", [((4, 16, 16), 32), ((8, 4, 4), 32), ((3, 16, 16), 16), ((2, 7, 7), 28)]
)
def test_decoder_upsamples_any_power_of_two_to_the_image(latent, size):
    decoder = Decoder(latent, size, width=8, num_blocks=1)
    out = decoder(torch.randn(2, *latent))
    assert out.shape == (2, 3, size, size)
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    transposed = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == int(np.log2(size // latent[1]))


def test_decoder_refuses_a_latent_it_cannot_upsample():
    with pytest.raises(ConfigError, match="power of two"):
        Decoder((4, 12, 12), 32)
    with pytest.raises(ConfigError, match="spatial latent"):
        Decoder((64,), 32)


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor, float]:
    """(auxiliary uint8 [400, 3, 16, 16], targets uint8 [64, ...], the MSE of guessing the
    auxiliary set's mean image for every target: what an attacker without information gets)."""
    options = {"image_size": 16, "train_size": 400, "test_size": 64, "seed": 0}
    aux = make_synthetic("train", **options).images
    targets = make_synthetic("test", **options).images
    mean_image = aux.float().div(255).mean(dim=0, keepdim=True)
    guess = float((targets.float().div(255) - mean_image).pow(2).mean())
    return aux, targets, guess


class GaussianNoise(nn.Module):
    """Adds N(0, sigma^2) in eval mode too: the attacker's copy is just as noisy."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma * torch.randn_like(x)


def test_attack_reconstructs_through_a_client_that_keeps_the_image(images):
    aux, targets, guess = images
    torch.manual_seed(0)
    client = nn.Conv2d(3, 8, 3, padding=1)  # full resolution, more channels than the image
    result = run_attack(client, aux, targets, MEAN, STD, NARROW)
    print(f"\nkeeping client: {result.metrics()}, mean-image guess MSE {guess:.4f}")
    assert result.mse < 0.01 and result.mse < 0.35 * guess
    assert result.ssim > 0.6 and result.psnr > 20
    assert result.reconstructions.shape == targets.shape
    best_val = min(mse for _, mse in result.val_curve)
    assert (result.best_step, best_val) in result.val_curve


def test_attack_fails_against_a_noisy_tiny_bottleneck(images):
    aux, targets, guess = images
    torch.manual_seed(0)
    # A random projection to 1 x 4 x 4 = 16 numbers (from 768), drowned in noise.
    client = nn.Sequential(nn.Conv2d(3, 1, 4, stride=4), GaussianNoise(5.0))
    result = run_attack(client, aux, targets, MEAN, STD, NARROW)
    print(f"\nnoisy bottleneck: {result.metrics()}, mean-image guess MSE {guess:.4f}")
    assert result.mse > 0.8 * guess
    assert result.ssim < 0.3


def test_attack_is_seeded_and_leaves_the_callers_random_state(images):
    aux, targets, _ = images
    client = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    quick = AttackSettings(steps=3, width=4, num_blocks=0, seed=7)
    before = torch.get_rng_state()
    first = run_attack(client, aux[:40], targets[:8], MEAN, STD, quick)
    assert torch.equal(torch.get_rng_state(), before)
    second = run_attack(client, aux[:40], targets[:8], MEAN, STD, quick)
    assert first.metrics() == second.metrics()
    assert torch.equal(first.reconstructions, second.reconstructions)
    assert first.grid(4).shape == (3, 2 * 16 + 3, 4 * 16 + 5)  # originals over reconstructions


def test_settings_refuse_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown attack setting"):
        AttackSettings.from_config({"epoch": 3})
    with pytest.raises(ConfigError, match="val_fraction"):
        AttackSettings(val_fraction=1.0)


@pytest.mark.filterwarnings("ignore:the attacker's auxiliary set has only")  # tiny on purpose
def test_attack_images_come_from_the_right_splits(compose_train):

    cfg = compose_train(TINY)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    aux, targets = select_attack_images(datamodule, aux_fraction=0.5, num_targets=8, seed=3)
    train_images, train_labels = datamodule.split_images("train")
    test_images, _ = datamodule.split_images("test")
    assert aux.shape[0] == round(0.5 * train_images.shape[0]) and targets.shape[0] == 8

    def rows(x: torch.Tensor) -> set[bytes]:
        return {bytes(img.numpy().tobytes()) for img in x}

    assert rows(aux) <= rows(train_images) and rows(targets) <= rows(test_images)
    again, same_targets = select_attack_images(datamodule, 0.5, 8, seed=3)
    assert torch.equal(again, aux) and torch.equal(same_targets, targets)
    some, _ = select_attack_images(datamodule, 1.0, 8, seed=3, aux_classes=[0, 1])
    keep = np.isin(train_labels.numpy(), [0, 1])
    assert some.shape[0] == keep.sum() and rows(some) == rows(train_images[torch.from_numpy(keep)])
    with pytest.raises(ConfigError, match="at least 2 auxiliary images"):
        select_attack_images(datamodule, aux_fraction=0.01, num_targets=8)


def test_a_small_auxiliary_set_warns_once_and_the_papers_does_not(compose_train):

    cfg = compose_train(TINY)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    small = r"only 24 images .*attack\.aux_fraction=.*aux_data="
    with pytest.warns(UserWarning, match=small) as got:
        select_attack_images(datamodule, aux_fraction=0.5, num_targets=8)
    assert len(got) == 1 and "\n" not in str(got[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_few_aux(500, 50_000, 0.01)  # the paper's 1% of CIFAR
        warn_if_few_aux(450, 45_000, 0.01)  # the same after the validation split
        warn_if_few_aux(MIN_AUX_IMAGES, 25_600, 0.01)


EPOCH_LINE = re.compile(r"attack: epoch (\d+)/20  train mse [\d.]{6}  val mse [\d.]{6}  \(\d+ s\)")


def test_progress_prints_a_line_every_tenth_of_the_epochs(images, capsys):
    aux, targets, _ = images
    client = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    quick = AttackSettings(epochs=20, batch_size=64, width=4, num_blocks=0)
    run_attack(client, aux[:40], targets[:4], MEAN, STD, quick, progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("attack: training the decoder on 36 auxiliary images")
    epochs = [int(EPOCH_LINE.fullmatch(line).group(1)) for line in lines[1:]]
    assert epochs == list(range(2, 21, 2))
    run_attack(client, aux[:40], targets[:4], MEAN, STD, quick)  # progress off: quiet
    assert capsys.readouterr().out == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_a_bar(images, monkeypatch):
    aux, targets, _ = images
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    client, quick = nn.Conv2d(3, 4, 3, padding=1), AttackSettings(epochs=3, width=4, num_blocks=0)
    run_attack(client, aux[:40], targets[:4], MEAN, STD, quick, progress=True)
    out = terminal.getvalue()
    assert "attack: decoder" in out and "3/3" in out and "val_mse=" in out
    assert not EPOCH_LINE.search(out)


def test_callback_and_entry_point_agree(compose_train, tmp_path, capsys, caplog):
    """`callbacks=attack` attacks after the final FedAvg, writes the grid into the run directory
    and logs it to W&B (disabled here); `python -m mocosfl.attack` on the final checkpoint, same
    settings, gives the same numbers and ends with its summary."""
    settings = ["decoder.steps=20", "decoder.width=8", "decoder.num_blocks=1", "num_targets=8"]
    settings += ["aux_fraction=0.5", "progress=false"]
    tiny = [o for o in TINY if not o.startswith("logger=")]
    cfg = compose_train(
        [*tiny, "logger=wandb", "callbacks=attack", "~callbacks.knn", "~callbacks.linear_probe"]
        + ["trainer.max_epochs=2", "callbacks.attack.every_n_epochs=1"]
        + [f"callbacks.attack.{s}" for s in settings]
    )
    assert list(cfg.callbacks)[-1] == "attack" and next(iter(cfg.callbacks)) == "fedavg"
    with pytest.warns(UserWarning, match="only 24 images"):
        during = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    ckpt = run_dir / "checkpoints" / "final.ckpt"
    assert json.loads((run_dir / "attack.json").read_text())["num_aux"] == 24
    with Image.open(run_dir / "reconstructions.png") as grid:
        assert grid.size[1] > 2 * 64  # 8 pairs of 16 px images upscaled to 64 px
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="mocosfl")

    overrides = [f"ckpt_path={ckpt}", "device=cpu", *(f"attack.{s}" for s in settings)]
    after = attack(compose_attack(tmp_path / "attack", overrides))
    for key in ("attack/mse", "attack/ssim", "attack/psnr"):
        assert after[key] == pytest.approx(during[key], rel=1e-5), key
    out = tmp_path / "attack"
    assert json.loads((out / "metrics.json").read_text()) == after
    assert (out / "reconstructions.png").stat().st_size > 0
    assert json.loads((out / "attack.json").read_text())["num_aux"] == 24
    # print_summary logs through `mocosfl` where logging is set up (as under pytest), else prints.
    printed = capsys.readouterr().out + caplog.text
    summary = printed.split("\nattack\n", 1)[1]
    for row in (f"run dir        {out}", f"checkpoint     {ckpt}", "aux images     24"):
        assert f"  {row}\n" in summary, row
    assert "  files written  metrics.json, reconstructions.png, attack.json\n" in summary
    assert "attack: epoch" not in summary  # attack.progress=false


def test_entry_point_reports_a_missing_checkpoint_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mocosfl.attack", "ckpt_path=/nonexistent/final.ckpt"]
        + [f"hydra.run.dir={tmp_path}", "logger=csv"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "does not exist" in last
    assert "Traceback" not in result.stderr
