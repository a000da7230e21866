"""The two attack protocols: the paper's targets and scores against a hand computation, its
validation rule, the original's decoder size, and both protocols end to end on a tiny run."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure
from torchvision.transforms.functional import to_tensor
from torchvision.utils import save_image

from mocosfl.attack import attack
from mocosfl.data.image_set import DATASET_STATS
from mocosfl.errors import ConfigError
from mocosfl.privacy import (
    PROTOCOLS,
    AttackSettings,
    Decoder,
    reconstruction_metrics,
    run_attack,
    score_decoder,
)
from mocosfl.privacy.attack import train_decoder
from mocosfl.privacy.decoder import parameter_count
from mocosfl.privacy.protocol import target_views
from mocosfl.train import train

from helpers import TINY, compose_attack

torch.set_num_threads(1)

MEAN, STD = DATASET_STATS["cifar10"]  # (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
PAPER_TARGET_STD = (0.247, 0.243, 0.261)
PAPER, CORRECTED = PROTOCOLS["paper"], PROTOCOLS["corrected"]


def channel(values) -> torch.Tensor:
    return torch.tensor(values).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def targets() -> torch.Tensor:
    """uint8 [4, 3, 32, 32]: smooth colour ramps plus noise (JPEG keeps them close)."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(40, 215, 32)
    base = ramp.view(1, 1, 1, 32) * torch.rand(4, 3, 1, 1, generator=g) + 20
    noisy = base + 4 * torch.randn(4, 3, 32, 32, generator=g)
    return noisy.clamp(0, 255).round().to(torch.uint8)


def test_paper_targets_reach_the_client_at_reduced_contrast(targets):
    inputs, _ = target_views(targets, MEAN, STD, PAPER)
    trained_view, truth = target_views(targets, MEAN, STD, CORRECTED)
    pixels = targets.float() / 255
    assert torch.allclose(inputs, (pixels - channel(MEAN)) / channel(PAPER_TARGET_STD), atol=1e-6)
    assert torch.allclose(trained_view, (pixels - channel(MEAN)) / channel(STD), atol=1e-6)
    contrast = torch.tensor(STD) / torch.tensor(PAPER_TARGET_STD)  # 0.819, 0.821, 0.770
    assert torch.allclose(inputs, trained_view * contrast.view(1, 3, 1, 1), atol=1e-5)
    assert contrast.mean() == pytest.approx(0.80, abs=0.01)
    assert torch.equal(truth, pixels)  # the corrected protocol scores against the pixels
    # A run normalised with other statistics (data.stats=computed) sees the same contrast.
    own = (0.25, 0.24, 0.26)
    inputs, _ = target_views(targets, MEAN, own, PAPER)
    trained_view, _ = target_views(targets, MEAN, own, CORRECTED)
    assert torch.allclose(inputs, trained_view * contrast.view(1, 3, 1, 1), atol=1e-5)


def test_paper_ground_truth_is_denormalised_with_the_training_std_then_a_jpeg(targets, tmp_path):
    _, truth = target_views(targets, MEAN, STD, PAPER)
    pixels = targets.float() / 255
    # By hand, in the original's order: normalised with one std, de-normalised with the other,
    # then through a .jpg file as the original writes and reads its ground truth.
    normalised = (pixels - channel(MEAN)) / channel(PAPER_TARGET_STD)
    faded = (normalised * channel(STD) + channel(MEAN)).clamp(0, 1)
    contrast = channel(STD) / channel(PAPER_TARGET_STD)
    assert torch.allclose(faded, channel(MEAN) + (pixels - channel(MEAN)) * contrast, atol=1e-6)
    expected = []
    for i, image in enumerate(faded):
        path = tmp_path / f"{i}.jpg"
        save_image(image[None], path)
        with Image.open(path) as jpeg:
            expected.append(to_tensor(jpeg))
    assert torch.equal(truth, torch.stack(expected))
    assert 0 < (truth - faded).abs().mean() < 0.02  # a lossy copy, not another picture
    variance = faded.var(dim=(2, 3)) / pixels.var(dim=(2, 3))
    assert torch.allclose(variance, (contrast**2).view(1, 3).expand(4, 3), rtol=1e-3)
    assert float((contrast**2).mean()) == pytest.approx(0.65, abs=0.01)


def test_paper_scores_by_hand(targets):
    _, truth = target_views(targets, MEAN, STD, PAPER)
    g = torch.Generator().manual_seed(1)
    reconstructions = (truth + 0.1 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
    scores = reconstruction_metrics(reconstructions, truth, zero_padded=True)
    per_image = (reconstructions - truth).pow(2).mean(dim=(1, 2, 3))
    assert scores["mse"] == pytest.approx(float(per_image.mean()), rel=1e-6)
    assert scores["psnr"] == pytest.approx(
        float((10 * torch.log10(1 / per_image)).mean()), rel=1e-5
    )
    # Zero padding by hand: pad with 5 zeros, let torchmetrics' window reach only into them,
    # and average its SSIM map over the original pixels.
    padded = [torch.nn.functional.pad(x, (5, 5, 5, 5)) for x in (reconstructions, truth)]
    _, full = structural_similarity_index_measure(*padded, data_range=1.0, return_full_image=True)
    assert scores["ssim"] == pytest.approx(float(full[..., 5:-5, 5:-5].mean()), abs=1e-5)
    reflected = reconstruction_metrics(reconstructions, truth)["ssim"]
    assert abs(scores["ssim"] - reflected) > 1e-3  # the border matters at 32 px


def test_the_decoder_is_the_originals_res_norm_n4_c64():
    assert parameter_count(Decoder((64, 32, 32), 32)) == 520_931
    # Our clients' other latents (cut layers, bottlenecks, architectures), checked against it.
    sizes = {(4, 16, 16): 449_579, (64, 16, 16): 483_875, (4, 8, 8): 412_523}
    sizes |= {(256, 32, 32): 648_419, (32, 32, 32): 504_611, (16, 32, 32): 494_339}
    for latent, count in sizes.items():
        assert parameter_count(Decoder(latent, 32)) == count, latent


def fit(steps: int, protocol: str) -> tuple[Decoder, list[tuple[int, float]], int]:
    """A 4-wide decoder fitted for ``steps`` on 40 random (latent, image) pairs, 10 held out, at
    a learning rate high enough for a noisy validation curve."""
    g = torch.Generator().manual_seed(0)
    latents, pixels = torch.randn(40, 2, 4, 4, generator=g), torch.rand(40, 3, 8, 8, generator=g)
    val = torch.zeros(40, dtype=torch.bool)
    val[torch.randperm(40, generator=g)[:10]] = True
    torch.manual_seed(0)
    decoder = Decoder((2, 4, 4), 8, width=4, num_blocks=0)
    settings = AttackSettings(
        steps=steps, batch_size=4, lr=0.03, width=4, num_blocks=0, protocol=protocol
    )
    curve, best_step = train_decoder(decoder, latents, pixels, val, settings, g)
    return decoder, curve, best_step


def parameters(decoder: Decoder) -> list[torch.Tensor]:
    return [p.detach().clone() for p in decoder.parameters()]


def test_paper_validation_keeps_the_weights_of_the_best_batch():
    decoder, curve, best_step = fit(64, "paper")  # 30 training images: a pass is 8 steps
    steps = [step for step, _ in curve]
    assert steps == [s for s in range(8, 65, 8) for _ in range(3)]  # 10 held out: 4 + 4 + 2
    best = min(range(len(curve)), key=lambda i: curve[i][1])
    assert curve[best][0] == best_step and best_step < 64
    # The kept weights are those of the best batch's step: a run stopped there ends with them
    # (validation does not move the weights; train mode only moves BatchNorm's statistics).
    stopped, _, _ = fit(best_step, "paper")
    assert all(torch.equal(a, b) for a, b in zip(parameters(decoder), parameters(stopped)))
    _, corrected_curve, corrected_step = fit(64, "corrected")
    assert [s for s, _ in corrected_curve] == list(range(8, 65, 8))  # one score a pass
    assert corrected_step in [s for s, _ in corrected_curve]


def test_a_kept_decoder_scores_under_either_protocol(targets):
    """The decoder an attack keeps, scored again under its own protocol, gives the attack's
    scores; under the other protocol it is scored against that protocol's targets."""
    client = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
    aux = torch.cat([targets] * 5)
    quick = AttackSettings(steps=3, width=4, num_blocks=0, protocol="paper")
    result = run_attack(client, aux, targets, MEAN, STD, quick)
    assert "decoder" not in result.summary()
    own, originals, reconstructions = score_decoder(
        client, result.decoder, targets, MEAN, STD, "paper"
    )
    assert own == {name: getattr(result, name) for name in ("mse", "ssim", "psnr")}
    assert torch.equal(originals, result.originals)
    assert torch.equal(reconstructions, result.reconstructions)
    other, truth, _ = score_decoder(client, result.decoder, targets, MEAN, STD, "corrected")
    assert torch.equal(truth, targets.float() / 255) and other["mse"] != own["mse"]


def test_an_unknown_protocol_is_a_config_error():
    with pytest.raises(ConfigError, match="corrected, paper"):
        AttackSettings(protocol="original")


@pytest.mark.filterwarnings("ignore:the attacker's auxiliary set has only")  # tiny on purpose
def test_both_protocols_end_to_end(compose_train, tmp_path):
    """`callbacks.attack.protocol=paper` in training and `attack=paper` on the checkpoint give
    the same attack_paper/* scores; the corrected protocol's are attack/*, on its own images."""
    settings = ["decoder.steps=10", "decoder.width=4", "decoder.num_blocks=0", "num_targets=8"]
    settings += ["aux_fraction=0.5", "progress=false"]
    cfg = compose_train(
        [*TINY, "callbacks=attack", "~callbacks.knn", "~callbacks.linear_probe"]
        + ["trainer.max_epochs=1", "callbacks.attack.protocol=paper"]
        + [f"callbacks.attack.{s}" for s in settings]
    )
    during = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert json.loads((run_dir / "attack.json").read_text())["protocol"] == "paper"
    ckpt = run_dir / "checkpoints" / "final.ckpt"

    base = [f"ckpt_path={ckpt}", "device=cpu", *(f"attack.{s}" for s in settings)]
    records = {}
    for protocol in ("paper", "corrected"):
        out = tmp_path / protocol
        records[protocol] = attack(compose_attack(out, [*base, f"attack={protocol}"]))
        assert json.loads((out / "metrics.json").read_text()) == records[protocol]
    paper, corrected = records["paper"], records["corrected"]
    assert paper["attack_protocol"] == "paper" and corrected["attack_protocol"] == "corrected"
    assert not any(k.startswith("attack/") for k in paper), paper
    assert not any(k.startswith("attack_paper/") for k in corrected), corrected
    for name in ("mse", "ssim", "psnr"):
        assert paper[f"attack_paper/{name}"] == pytest.approx(during[f"attack_paper/{name}"])
    # The paper's auxiliary pool adds the validation split: half of 48 + 16, not of 48.
    assert json.loads((tmp_path / "paper" / "attack.json").read_text())["num_aux"] == 32
    assert json.loads((tmp_path / "corrected" / "attack.json").read_text())["num_aux"] == 24
