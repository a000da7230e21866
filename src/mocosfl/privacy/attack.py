"""Model-inversion attack by an honest-but-curious server (docs/paper.md, "Attack").

The server holds the client-side model (the FedAvg model) and an auxiliary set of images. It
encodes the auxiliary images with the client, trains a :class:`Decoder` from latents back to
images with MSE, keeps the decoder that is best on a held-out tenth of the auxiliary set, and
reconstructs fixed target images it never saw from their latents alone. The scores are computed
on [0, 1] pixels; ``attack/mse`` is the headline (higher is more private). How the decoder is
validated and what it is scored against is the protocol's (:mod:`mocosfl.privacy.protocol`): the
corrected one by default, ``protocol="paper"`` for the original's, logged as ``attack_paper/*``.

``run_attack`` is the one function behind the training callback, ``python -m mocosfl.attack`` and
the notebook; ``select_attack_images`` picks its images from a run's data module, and
``AttackResult.save`` writes what both the callback and the entry point leave in a run directory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch import nn
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchvision.utils import make_grid
from tqdm import tqdm

from mocosfl.api import load_datamodule, load_module
from mocosfl.data.datasets import load_image_set
from mocosfl.data.module import FederatedDataModule
from mocosfl.data.transforms import normalize
from mocosfl.errors import ConfigError
from mocosfl.privacy.decoder import Decoder
from mocosfl.privacy.protocol import (
    AUX_POOLS,
    DEFAULT_PROTOCOL,
    AttackProtocol,
    get_protocol,
    ground_truth,
    target_views,
    to_unit,
    zero_padded_ssim,
)
from mocosfl.utils.plots import image_pair_grid

_ENCODE_BATCH = 256  # images per forward pass when encoding or decoding whole sets
# Fewer auxiliary images than this get a warning. The paper's attacker has 1% of CIFAR's training
# images (450-500); 256 is about half of that: 8 batches of 32 an epoch and a validation tenth of
# ~26 images. Below it the decoder sees too few images to generalise to the targets and the
# validation set that picks it is a handful, so a high attack/mse measures a weak attacker more
# than a private client.
MIN_AUX_IMAGES = 256
GRID_FILE, SUMMARY_FILE = "reconstructions.png", "attack.json"


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """How the attacker trains its decoder and which protocol measures it. The defaults are the
    original's (docs/paper.md, "Attack"): Adam 1e-3, batch 32, 50 epochs, a 64-wide decoder with
    4 residual blocks, 10% validation; ``protocol`` names a
    :data:`~mocosfl.privacy.protocol.PROTOCOLS` preset (``corrected`` or the original's
    ``paper``)."""

    epochs: int = 50
    steps: int | None = None  # a fixed number of decoder steps instead of ``epochs``
    batch_size: int = 32
    lr: float = 1e-3  # Adam
    width: int = 64  # decoder channels
    num_blocks: int = 4  # residual blocks at the latent's resolution
    val_fraction: float = 0.1  # share of the auxiliary set that selects the decoder
    seed: int = 0  # decoder initialisation, the train/val split and the batch order
    protocol: str = DEFAULT_PROTOCOL

    def __post_init__(self) -> None:
        get_protocol(self.protocol)  # an unknown name is a ConfigError now, not after training
        checks = [
            (self.epochs >= 1, f"attack epochs={self.epochs}; use at least 1"),
            (self.steps is None or self.steps >= 1, f"attack steps={self.steps}; use >= 1 or null"),
            (self.batch_size >= 1, f"attack batch_size={self.batch_size}; use at least 1"),
            (self.lr > 0, f"attack lr={self.lr}; use a positive learning rate"),
            (0 < self.val_fraction < 1, f"attack val_fraction={self.val_fraction}; use (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> AttackSettings:
        """Settings from a config mapping; an unknown key is a one-line ConfigError."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(
                f"unknown attack setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(fields))}"
            )
        return cls(**values)


@dataclasses.dataclass
class AttackResult:
    """What one attack measured. Images are float [n, 3, S, S] on [0, 1], on the CPU;
    ``originals`` are what the reconstructions were scored against (under the paper's protocol
    the faded JPEG copies of the targets: :func:`~mocosfl.privacy.protocol.target_views`)."""

    mse: float
    ssim: float
    psnr: float  # dB, the mean over images of 10 log10(1 / per-image MSE)
    originals: torch.Tensor
    reconstructions: torch.Tensor
    val_curve: list[tuple[int, float]]  # (decoder step, validation MSE) after every pass
    best_step: int  # the step whose decoder was kept
    num_aux: int  # auxiliary images, training and validation parts together
    seconds: float  # wall time of the whole attack
    protocol: str = DEFAULT_PROTOCOL  # the protocol that measured it
    # The kept decoder (eval mode), to score it on other targets (:func:`score_decoder`).
    decoder: Decoder | None = dataclasses.field(default=None, repr=False)

    @property
    def prefix(self) -> str:
        """``attack`` (the corrected protocol) or ``attack_<protocol>``: the metrics' prefix."""
        return get_protocol(self.protocol).prefix

    def metrics(self) -> dict[str, float]:
        """The logged scalars: ``attack/mse``, ``attack/ssim``, ``attack/psnr`` (``attack_paper/*``
        under the paper's protocol, so that the two are never mixed)."""
        scores = {"mse": self.mse, "ssim": self.ssim, "psnr": self.psnr}
        return {f"{self.prefix}/{name}": value for name, value in scores.items()}

    def grid(self, count: int = 16) -> torch.Tensor:
        """float [3, H, W] on [0, 1]: ``count`` originals in the top row, their
        reconstructions below, at their own size (for a notebook's ``imshow``)."""
        k = min(count, self.originals.shape[0])
        pairs = torch.cat([self.originals[:k], self.reconstructions[:k]])
        return make_grid(pairs, nrow=k, padding=1, pad_value=1.0)

    def grid_image(self, count: int | None = None, per_row: int = 16) -> Image.Image:
        """The readable grid of ``reconstructions.png``: the first ``count`` targets (None: all),
        ``per_row`` a row, originals over reconstructions, upscaled, titled with the scores."""
        n = self.originals.shape[0]
        k = n if count is None else max(1, min(count, n))
        title = (
            f"model inversion: {self.prefix}/mse {self.mse:.4f}   "  # the prefix names the protocol
            f"ssim {self.ssim:.3f}   psnr {self.psnr:.2f} dB   ({k} of {n} targets, "
            f"{self.num_aux} auxiliary images)"
        )
        return image_pair_grid(self.originals[:k], self.reconstructions[:k], title, per_row)

    def summary(self) -> dict[str, Any]:
        """JSON-ready scalars (everything but the images)."""
        skip = {"originals", "reconstructions", "decoder"}
        names = [f.name for f in dataclasses.fields(self) if f.name not in skip]
        return {name: getattr(self, name) for name in names}

    def save(self, out_dir: Path | str, grid_images: int | None = None) -> list[Path]:
        """Write ``reconstructions.png`` (:meth:`grid_image`) and ``attack.json``
        (:meth:`summary`) into ``out_dir``; returns their paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        grid, summary = out_dir / GRID_FILE, out_dir / SUMMARY_FILE
        self.grid_image(grid_images).save(grid)
        summary.write_text(json.dumps(self.summary(), indent=1) + "\n")
        return [grid, summary]


def reconstruction_metrics(
    reconstructions: torch.Tensor, originals: torch.Tensor, zero_padded: bool = False
) -> dict[str, float]:
    """MSE, SSIM (11x11 Gaussian window, sigma 1.5; ``zero_padded``: the window sees zeros beyond
    the border, as the original's, else torchmetrics' reflection) and PSNR of [n, 3, S, S] images
    on [0, 1], each the mean over images."""
    if zero_padded:
        ssim = zero_padded_ssim(reconstructions, originals)
    else:
        ssim = structural_similarity_index_measure(reconstructions, originals, data_range=1.0)
    return {
        "mse": float(mean_squared_error(reconstructions, originals)),
        "ssim": float(ssim),
        "psnr": float(
            peak_signal_noise_ratio(reconstructions, originals, data_range=1.0, dim=(1, 2, 3))
        ),
    }


@torch.no_grad()
def _in_batches(fn: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``fn`` over ``inputs`` [n, ...] in chunks on ``device``; the outputs back on ``device``."""
    return torch.cat([fn(x.to(device)) for x in inputs.split(_ENCODE_BATCH)])


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless index batches [<= batch_size]: reshuffled passes over range(n)."""
    while True:
        order = torch.randperm(n, generator=generator)
        yield from order.split(batch_size)


class DecoderProgress:
    """Reports the decoder's training as it goes, so that a long attack is never silent: a bar on
    a terminal, else (batch jobs, logs, tests) a plain flushed line every tenth of the epochs::

        attack: epoch 5/50  train mse 0.0312  val mse 0.0330  (12 s)

    Called after every validation with (epoch, train MSE of that epoch, validation MSE)."""

    def __init__(self, epochs: int, header: str) -> None:
        self.epochs, self.every = epochs, max(1, math.ceil(epochs / 10))
        self.stream = sys.stdout  # looked up now: pytest and notebooks replace it
        self.start = time.perf_counter()
        self.bar = None
        if self.stream.isatty():
            self.bar = tqdm(total=epochs, desc="attack: decoder", unit="epoch", file=self.stream)
        self._print(header)

    def _print(self, line: str) -> None:
        if self.bar is None:
            print(line, file=self.stream, flush=True)
        else:
            self.bar.write(line, file=self.stream)

    def __call__(self, epoch: int, train_mse: float, val_mse: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(train_mse=f"{train_mse:.4f}", val_mse=f"{val_mse:.4f}")
            self.bar.update(1)
            if epoch == self.epochs:
                self.bar.close()
        elif epoch % self.every == 0 or epoch == self.epochs:
            seconds = time.perf_counter() - self.start
            self._print(
                f"attack: epoch {epoch}/{self.epochs}  train mse {train_mse:.4f}  "
                f"val mse {val_mse:.4f}  ({seconds:.0f} s)"
            )


def validation_scores(
    decoder: Decoder,
    latents: torch.Tensor,
    pixels: torch.Tensor,
    val_idx: torch.Tensor,
    rule: str,
    batch_size: int,
    generator: torch.Generator,
) -> Iterator[tuple[float, int]]:
    """The decoder's validation MSEs on the images ``val_idx`` [m] of (latents, pixels), as
    ``rule`` scores them; yields (MSE, images scored), and the decoder as it stands at each yield
    is the candidate to keep.

    ``"pass"``: eval mode, one MSE over all ``m`` images. ``"batch"`` (the original's): train mode,
    so each batch is normalised by its own statistics and updates BatchNorm's running ones, one
    MSE per batch of ``batch_size`` in a fresh random order."""
    if rule == "pass":
        decoder.eval()
        predicted = _in_batches(decoder, latents[val_idx], latents.device)
        yield float(F.mse_loss(predicted, pixels[val_idx])), val_idx.numel()
        return
    decoder.train()
    order = torch.randperm(val_idx.numel(), generator=generator).to(val_idx.device)
    for idx in val_idx[order].split(batch_size):
        with torch.no_grad():  # not around the yield: the caller's grad mode stays its own
            predicted = decoder(latents[idx])
        yield float(F.mse_loss(predicted, pixels[idx])), idx.numel()


def train_decoder(
    decoder: Decoder,
    latents: torch.Tensor,
    pixels: torch.Tensor,
    val: torch.Tensor,
    settings: AttackSettings,
    generator: torch.Generator,
    progress: bool = False,
) -> tuple[list[tuple[int, float]], int]:
    """Fit ``decoder`` on (latents [n, ...] -> pixels [n, 3, S, S]) with MSE, validating after
    every pass over the training part as the protocol says (:func:`validation_scores`); ``val``
    [n] is True for the validation images. Leaves the decoder with the weights of its lowest
    validation score (the state at that score: BatchNorm's running statistics included); returns
    the curve, every (step, validation MSE) scored, and the step of the kept weights.
    ``progress``: report every pass (its MSE over all validation images) as
    :class:`DecoderProgress` does."""
    rule = get_protocol(settings.protocol).validation
    train_idx, val_idx = (~val).nonzero().flatten(), val.nonzero().flatten()
    passes = math.ceil(train_idx.numel() / settings.batch_size)
    total = settings.steps or settings.epochs * passes
    report: DecoderProgress | None = None
    if progress:
        header = (
            f"attack: training the decoder on {train_idx.numel()} auxiliary images "
            f"({val_idx.numel()} more to validate), {total} steps in batches of "
            f"{settings.batch_size}, {settings.protocol} protocol"
        )
        report = DecoderProgress(math.ceil(total / passes), header)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=settings.lr)
    curve: list[tuple[int, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    batches = _batches(train_idx.numel(), settings.batch_size, generator)
    # The epoch's summed training loss stays on the device: no synchronisation every step.
    train_loss, train_steps, epoch = torch.zeros((), device=latents.device), 0, 0
    for step in range(1, total + 1):
        decoder.train()
        idx = train_idx[next(batches).to(train_idx.device)]
        loss = F.mse_loss(decoder(latents[idx]), pixels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_loss, train_steps = train_loss + loss.detach(), train_steps + 1
        if step % passes == 0 or step == total:
            scores = validation_scores(
                decoder, latents, pixels, val_idx, rule, settings.batch_size, generator
            )
            squared_error = 0.0
            for val_mse, count in scores:
                curve.append((step, val_mse))
                squared_error += val_mse * count
                if best is None or val_mse < best[0]:
                    best = (val_mse, step, copy.deepcopy(decoder.state_dict()))
            epoch += 1
            if report is not None:
                report(epoch, float(train_loss) / train_steps, squared_error / val_idx.numel())
            train_loss, train_steps = torch.zeros_like(train_loss), 0
    decoder.load_state_dict(best[2])
    decoder.eval()
    return curve, best[1]


def run_attack(
    client_model: nn.Module,
    aux_images: torch.Tensor,
    target_images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    settings: AttackSettings | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> AttackResult:
    """Train a decoder on the auxiliary images and reconstruct the target images.

    ``client_model``: normalised images [B, 3, S, S] -> latents [B, C, h, h] (a copy is used, in
    eval mode); ``aux_images`` / ``target_images``: uint8 [n, 3, S, S] (or float on [0, 1]),
    normalised with ``mean`` / ``std`` as the client's training data were (the targets as
    ``settings.protocol`` says: :func:`~mocosfl.privacy.protocol.target_views`). Deterministic
    given ``settings.seed``; the caller's random number streams are left as they were.
    ``progress``: report the decoder's training on stdout (:class:`DecoderProgress`).
    """
    settings = settings or AttackSettings()
    protocol = get_protocol(settings.protocol)
    if aux_images.shape[0] < 2:
        raise ConfigError(
            f"the attack needs at least 2 auxiliary images (got {aux_images.shape[0]}); "
            "raise the auxiliary fraction"
        )
    device = torch.device(device)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        client = copy.deepcopy(client_model).to(device).eval().requires_grad_(False)
        latents = _in_batches(client, normalize(aux_images, mean, std), device)
        num_val = min(aux_images.shape[0] - 1, max(1, round(settings.val_fraction * len(latents))))
        val = torch.zeros(len(latents), dtype=torch.bool)
        val[torch.randperm(len(latents), generator=generator)[:num_val]] = True
        decoder = Decoder(
            tuple(latents.shape[1:]),
            aux_images.shape[-1],
            settings.width,
            settings.num_blocks,
            xavier=False,  # PyTorch's default: a stronger attacker (docs/differences.md)
        ).to(device)
        pixels = ground_truth(to_unit(aux_images), protocol).to(device)
        curve, best_step = train_decoder(
            decoder, latents, pixels, val.to(device), settings, generator, progress
        )
    scores, originals, reconstructions = score_decoder(
        client, decoder, target_images, mean, std, protocol
    )
    return AttackResult(
        **scores,
        originals=originals,
        reconstructions=reconstructions,
        val_curve=curve,
        best_step=best_step,
        num_aux=int(aux_images.shape[0]),
        seconds=time.perf_counter() - start,
        protocol=protocol.name,
        decoder=decoder,
    )


def score_decoder(
    client: nn.Module,
    decoder: nn.Module,
    target_images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    protocol: str | AttackProtocol,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """(scores, originals, reconstructions) of ``decoder`` on the targets uint8 [n, 3, S, S] as
    ``protocol`` presents and scores them (:func:`~mocosfl.privacy.protocol.target_views`); both
    image tensors float [n, 3, S, S] on [0, 1], on the CPU. ``client`` and ``decoder`` share a
    device and are put in eval mode. A decoder trained under one protocol can be scored under
    another: that separates what the protocols train from what they score."""
    protocol = get_protocol(protocol)
    device = next(decoder.parameters()).device
    inputs, originals = target_views(target_images, mean, std, protocol)
    client, decoder = client.eval(), decoder.eval()
    reconstructions = _in_batches(decoder, _in_batches(client, inputs, device), device).cpu()
    originals = originals.cpu()
    scores = reconstruction_metrics(reconstructions, originals, protocol.zero_padded_ssim)
    return scores, originals, reconstructions


def _seeded_choice(n: int, count: int, seed: int, stream: int) -> np.ndarray:
    """``count`` of ``range(n)`` without replacement, in random order (so that a grid of the first
    targets mixes the classes of a class-sorted split), a function of (seed, stream)."""
    return np.random.default_rng([int(seed), stream]).choice(n, count, replace=False)


def select_attack_images(
    datamodule: FederatedDataModule,
    aux_fraction: float = 0.01,
    num_targets: int = 128,
    seed: int = 0,
    aux_classes: Sequence[int] | None = None,
    aux_data: Mapping[str, Any] | None = None,
    aux_pool: str = "train",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(auxiliary uint8 [a, 3, S, S], target uint8 [num_targets, 3, S, S]) for an attack on the
    run of ``datamodule`` (set up).

    Targets: ``num_targets`` test images, fixed by ``seed``. Auxiliary images: a seeded
    ``aux_fraction`` of the run's training images (the test split never; ``aux_pool="train+val"``:
    of its training and validation splits together, the whole training set as the original,
    which holds out no validation split, draws from), or of the training split of another data
    set (``aux_data``: ``load_image_set`` arguments such as ``name`` and ``root``), optionally only
    the classes ``aux_classes``.
    """
    if not 0 < aux_fraction <= 1:
        raise ConfigError(f"attack aux_fraction={aux_fraction}; use a value in (0, 1]")
    if aux_pool not in AUX_POOLS:
        raise ConfigError(f"attack aux_pool={aux_pool!r}; use one of {', '.join(AUX_POOLS)}")
    test, _ = datamodule.split_images("test")
    if not 1 <= num_targets <= test.shape[0]:
        raise ConfigError(
            f"attack num_targets={num_targets}; the test split has {test.shape[0]} images"
        )
    targets = test[torch.from_numpy(_seeded_choice(test.shape[0], num_targets, seed, 41))]
    if aux_data:
        aux_set = load_image_set(
            split="train", image_size=datamodule.image_size, **{"download": False, **aux_data}
        )
        images, labels = aux_set.images, aux_set.labels
    else:
        splits = [datamodule.split_images(s) for s in aux_pool.split("+")]
        images, labels = (torch.cat(parts) for parts in zip(*splits))
    pool = np.arange(images.shape[0])
    if aux_classes is not None:
        pool = pool[np.isin(labels.numpy(), list(aux_classes))]
    count = round(aux_fraction * pool.shape[0])
    if count < 2:
        raise ConfigError(
            f"attack aux_fraction={aux_fraction} of {pool.shape[0]} images leaves {count}; "
            "the attack needs at least 2 auxiliary images"
        )
    warn_if_few_aux(count, pool.shape[0], aux_fraction)
    aux = images[torch.from_numpy(pool[_seeded_choice(pool.shape[0], count, seed, 43)])]
    return aux, targets


def warn_if_few_aux(count: int, pool: int, aux_fraction: float) -> None:
    """One warning line when the attacker has fewer than :data:`MIN_AUX_IMAGES` images."""
    if count < MIN_AUX_IMAGES:
        rank_zero_warn(
            f"the attacker's auxiliary set has only {count} images (aux_fraction={aux_fraction} "
            f"of {pool:,}); under {MIN_AUX_IMAGES} the decoder is weak and attack/mse overstates "
            "privacy: raise attack.aux_fraction=... or give attack.aux_data={name: ..., root: ...} "
            "(callbacks.attack.* in training)"
        )


def attack_checkpoint(
    ckpt_path: str,
    aux_fraction: float = 0.01,
    num_targets: int = 128,
    aux_classes: Sequence[int] | None = None,
    aux_data: Mapping[str, Any] | None = None,
    settings: AttackSettings | None = None,
    device: torch.device | str = "cpu",
    data_overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> AttackResult:
    """The attack on a training checkpoint's FedAvg client model, with the images of
    :func:`select_attack_images` from the run's own data (``data_overrides``: e.g. ``root``),
    drawn and measured as ``settings.protocol`` says."""
    settings = settings or AttackSettings()
    module = load_module(ckpt_path)
    datamodule = load_datamodule(ckpt_path, **dict(data_overrides or {}))
    datamodule.setup()
    aux_pool = get_protocol(settings.protocol).aux_pool
    aux, targets = select_attack_images(
        datamodule, aux_fraction, num_targets, settings.seed, aux_classes, aux_data, aux_pool
    )
    client = module.bank.averaged_client()
    stats = (datamodule.mean, datamodule.std)
    return run_attack(client, aux, targets, *stats, settings, device, progress)
