"""How a model-inversion attack is measured: the corrected protocol (the default) or the original's.

The same decoder (with PyTorch's default initialisation, the original's, which gave a stronger
attacker than Xavier's) and training budget serve both; they differ in what the attacker
validates on, which images it is scored against and how (docs/differences.md, row "attack
protocol"):

* ``corrected``: the decoder is scored in eval mode on the whole held-out tenth after every pass
  and the best pass is kept; the targets reach the client normalised as its training data were
  and are scored against their own pixels; the auxiliary images come from the run's training
  split (1%: 450 CIFAR-10 images after the validation split).
* ``paper``: what the original's attack does. It validates in train mode (batch statistics, the
  running statistics updated by the held-out images) batch by batch and keeps the weights
  whenever one batch beats the best so far. Its saved targets were normalised with std
  (0.247, 0.243, 0.261) and are de-normalised with the training std (0.2023, 0.1994, 0.2010): the
  client sees them at about 0.82x contrast and the ground truth has about 0.65x the pixel
  variance (reproduced relative to the run's own std, so a run normalised with other statistics
  sees the same contrast). Every ground-truth image (auxiliary and target) goes through an 8-bit
  JPEG file at PIL's default quality 75 before the decoder trains on it or is scored against it.
  Its auxiliary set is 1% of the whole training set (500 CIFAR-10 images: it holds out no
  validation split), and its SSIM pads the 11x11 Gaussian window with zeros.

Scores of the two are logged under different names (``attack/*`` and ``attack_paper/*``,
:attr:`AttackProtocol.prefix`), so that they cannot be mixed silently.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mocosfl.data.transforms import normalize
from mocosfl.errors import ConfigError
from mocosfl.privacy.data import denormalize

# The original's training std and the std its saved targets were normalised with.
_ORIGINAL_STD = (0.2023, 0.1994, 0.2010)
_ORIGINAL_TARGET_STD = (0.247, 0.243, 0.261)
VALIDATION_RULES = ("pass", "batch")
AUX_POOLS = ("train", "train+val")
_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5
_SSIM_C1, _SSIM_C2 = 0.01**2, 0.03**2  # for a data range of 1


@dataclass(frozen=True)
class AttackProtocol:
    """One way of measuring the attack. The presets are :data:`PROTOCOLS`; their fields are
    fixed so that a score logged under a protocol's name always means the same measurement."""

    name: str
    # "pass": eval mode, one MSE over the whole held-out set after every pass, the best pass kept;
    # "batch": train mode, one MSE per held-out batch (in a fresh order each pass), the weights
    # kept whenever one batch improves on the best so far.
    validation: str
    # The targets are normalised with the run's std times this before the client (None: 1, as
    # the client's training data were) and de-normalised with the run's std for the ground truth.
    target_std_scale: tuple[float, float, float] | None
    jpeg_quality: int | None  # every ground-truth image through a JPEG file (None: exact pixels)
    aux_pool: str  # "train": the run's training split; "train+val": the whole training set
    zero_padded_ssim: bool  # SSIM with a zero-padded window (False: torchmetrics, reflected)

    def __post_init__(self) -> None:
        if self.validation not in VALIDATION_RULES or self.aux_pool not in AUX_POOLS:
            raise ConfigError(
                f"attack protocol {self.name}: validation in {VALIDATION_RULES}, "
                f"aux_pool in {AUX_POOLS}"
            )

    @property
    def prefix(self) -> str:
        """Metric prefix: ``attack`` for the default protocol, ``attack_<name>`` otherwise."""
        return "attack" if self.name == DEFAULT_PROTOCOL else f"attack_{self.name}"


DEFAULT_PROTOCOL = "corrected"
PROTOCOLS: dict[str, AttackProtocol] = {
    p.name: p
    for p in (
        AttackProtocol(
            "corrected",
            validation="pass",
            target_std_scale=None,
            jpeg_quality=None,
            aux_pool="train",
            zero_padded_ssim=False,
        ),
        AttackProtocol(
            "paper",
            validation="batch",
            target_std_scale=tuple(t / s for t, s in zip(_ORIGINAL_TARGET_STD, _ORIGINAL_STD)),
            jpeg_quality=75,
            aux_pool="train+val",
            zero_padded_ssim=True,
        ),
    )
}


def get_protocol(protocol: str | AttackProtocol) -> AttackProtocol:
    """The preset named ``protocol`` (a protocol is returned as it is); unknown: ConfigError."""
    if isinstance(protocol, AttackProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"attack protocol={protocol!r}; use one of {', '.join(PROTOCOLS)} "
            "(docs/differences.md, attack protocol)"
        )
    return PROTOCOLS[protocol]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [n, 3, S, S] (or float already on [0, 1]) -> float32 on [0, 1]."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def jpeg_round_trip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """float [n, 3, S, S] on [0, 1] -> the same images after an 8-bit JPEG file at ``quality``
    (PIL's encoder and its default 4:2:0 chroma subsampling), float32 on [0, 1]. Pixels are
    rounded half up to 8 bits first, as torchvision's ``save_image`` does."""
    quantised = images.mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    decoded = []
    for image in quantised.permute(0, 2, 3, 1).cpu().numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as jpeg:
            decoded.append(np.asarray(jpeg.convert("RGB")))
    images = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()
    return images.float().div(255.0)


def ground_truth(pixels: torch.Tensor, protocol: AttackProtocol) -> torch.Tensor:
    """float [n, 3, S, S] on [0, 1] -> what the decoder is trained on or scored against: the
    pixels themselves, or their JPEG round trip (:func:`jpeg_round_trip`)."""
    if protocol.jpeg_quality is None:
        return pixels
    return jpeg_round_trip(pixels, protocol.jpeg_quality).to(pixels.device)


def target_views(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    protocol: AttackProtocol,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the client is given, what its reconstruction is scored against) for target images
    uint8 [n, 3, S, S] (or float on [0, 1]) of a run normalised with ``mean`` / ``std``: both
    float32 [n, 3, S, S], the first normalised, the second on [0, 1].

    With ``protocol.target_std_scale`` the targets are normalised with ``std`` times it and
    de-normalised with ``std`` (the original's saved targets: (0.247, 0.243, 0.261) for its std
    (0.2023, 0.1994, 0.2010)): contrast ``1 / scale`` (0.82, 0.82, 0.77) for both.
    """
    if protocol.target_std_scale is None:
        return normalize(images, mean, std), ground_truth(to_unit(images), protocol)
    target_std = [s * k for s, k in zip(std, protocol.target_std_scale)]
    inputs = normalize(images, mean, target_std)
    return inputs, ground_truth(denormalize(inputs, mean, std), protocol)


def _gaussian_window(channels: int, like: torch.Tensor) -> torch.Tensor:
    """[channels, 1, 11, 11]: the normalised 2-D Gaussian (sigma 1.5) for a depthwise conv."""
    x = torch.arange(_SSIM_WINDOW, dtype=like.dtype, device=like.device) - _SSIM_WINDOW // 2
    g = torch.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, -1, -1).contiguous()


def zero_padded_ssim(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of [n, c, S, S] images on [0, 1]: an 11x11 Gaussian window (sigma 1.5) that
    sees zeros beyond the border, averaged over every pixel, channel and image (the original's
    score; torchmetrics reflects the border instead)."""
    channels = images.shape[1]
    window = _gaussian_window(channels, images)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=_SSIM_WINDOW // 2, groups=channels)

    mu_x, mu_y = blur(images), blur(targets)
    var_x = blur(images * images) - mu_x**2
    var_y = blur(targets * targets) - mu_y**2
    cov = blur(images * targets) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _SSIM_C1) * (2 * cov + _SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return (numerator / denominator).mean()
