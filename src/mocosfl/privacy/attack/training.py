"""The decoder's training: fit it on the auxiliary latents, keep its best-validated weights."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mocosfl.privacy.attack.scoring import in_batches
from mocosfl.privacy.attack.settings import AttackSettings
from mocosfl.privacy.decoder import Decoder
from mocosfl.privacy.protocol import get_protocol


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
        predicted = in_batches(decoder, latents[val_idx], latents.device)
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
