"""The blur operators of the MoCo v2 augmentation (:mod:`~mocosfl.data.transforms`): per image,
the ``[S, S]`` matrix of a 1-D blur along one axis, padding folded in, so that a batched matmul
blurs a whole batch. Two strengths (``data.blur``, docs/differences.md, row "blur"):

- ``kernel10``: a true Gaussian of ``int(0.1 * S)`` taps (rounded up to odd, at least 3) with
  reflect padding. At 32 px that is 3 taps, which caps the blur near 0.8 px whatever sigma;
- ``pil``: the operator of PIL's ``ImageFilter.GaussianBlur(radius=sigma)``, which the original
  applies: per axis, three passes of an extended box filter whose total variance is sigma^2, each
  pass replicating the edge pixels. It differs from PIL only by PIL's fixed-point arithmetic,
  rounded to 8 bits after every pass (on real CIFAR-10 images 0.3 to 0.6 levels of 255 on
  average, tests/test_fidelity_data.py).
"""

from __future__ import annotations

import torch

__all__ = [
    "BLUR_BEFORE_CHOICE",
    "BLUR_KINDS",
    "PIL_PASSES",
    "gaussian_matrices",
    "pil_box_radius",
    "pil_matrices",
]

BLUR_KINDS = ("kernel10", "pil")  # see the module docstring
# The blur of every run before data.blur existed: what a checkpoint without the setting used.
BLUR_BEFORE_CHOICE = "kernel10"
PIL_PASSES = 3  # box passes per axis of PIL's Gaussian blur


def _reflect_taps(size: int, offsets: torch.Tensor) -> torch.Tensor:
    """``[S, k]`` source pixel of each tap ``offsets`` (int64 ``[k]``) of each output pixel,
    mirrored at 0 and ``S - 1`` without repeating the edge (torch's ``reflect`` padding)."""
    taps = torch.arange(size, device=offsets.device).view(size, 1) + offsets.view(1, -1)
    taps = taps.abs()
    return torch.where(taps > size - 1, 2 * (size - 1) - taps, taps)


def _replicate_taps(size: int, offsets: torch.Tensor) -> torch.Tensor:
    """As :func:`_reflect_taps`, with the edge pixels repeated (PIL's box blur does this)."""
    taps = torch.arange(size, device=offsets.device).view(size, 1) + offsets.view(1, -1)
    return taps.clamp_(0, size - 1)


def _band_matrices(kernels: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Per-image 1-D convolution matrices ``[n, S, S]`` from ``kernels [n, k]`` and ``taps
    [S, k]``: row ``i`` of matrix ``j`` holds ``kernels[j, t]`` at column ``taps[i, t]`` (summed
    where a padded tap falls on a pixel twice), so the padding is folded into the matrix."""
    n, k = kernels.shape
    size = taps.shape[0]
    mat = torch.zeros(n, size, size, device=kernels.device)
    mat.scatter_add_(
        2, taps.view(1, size, k).expand(n, -1, -1), kernels.view(n, 1, k).expand(-1, size, -1)
    )
    return mat


def gaussian_matrices(sigma: torch.Tensor, size: int, taps: int) -> torch.Tensor:
    """``kernel10``: a sampled Gaussian of ``taps`` (odd) taps per image, reflect padding.
    ``sigma [n]`` -> ``[n, S, S]``."""
    n, half = sigma.shape[0], taps // 2
    pos = torch.arange(taps, dtype=torch.float32, device=sigma.device) - half
    kern = torch.exp(-(pos.view(1, taps) ** 2) / (2.0 * sigma.view(n, 1) ** 2))
    kern = kern / kern.sum(dim=1, keepdim=True)
    return _band_matrices(kern, _reflect_taps(size, pos.long()))


def pil_box_radius(sigma: torch.Tensor) -> torch.Tensor:
    """Radius ``r = l + a`` of the extended box whose ``PIL_PASSES``-fold repetition has variance
    ``sigma^2``, as PIL chooses it: weight 1 on the taps ``|d| <= l``, ``a`` on ``|d| = l + 1``,
    normalised by ``2 r + 1``. With ``v = sigma^2 / passes`` the variance of one pass, ``l`` is
    the widest plain box not above it (``l (l + 1) / 3 <= v``) and ``a`` solves
    ``(l (l + 1) (2 l + 1) / 3 + 2 a (l + 1)^2) / (2 l + 1 + 2 a) = v``. Elementwise."""
    v = sigma.double() ** 2 / PIL_PASSES
    whole = torch.floor((torch.sqrt(12.0 * v + 1.0) - 1.0) / 2.0)
    part = (2.0 * whole + 1.0) * (3.0 * v - whole * (whole + 1.0))
    part = part / (6.0 * ((whole + 1.0) ** 2 - v))
    return (whole + part).to(sigma.dtype)


def pil_matrices(sigma: torch.Tensor, size: int, reach: int) -> torch.Tensor:
    """``pil``: PIL's Gaussian blur along one axis, ``sigma [n]`` -> ``[n, S, S]``: three passes
    of the extended box of :func:`pil_box_radius`, each repeating the edge pixels (so the edge
    handling is that of three padded passes, not of one padded three-pass kernel). ``reach``:
    the largest tap offset of one pass, ``floor(r) + 1`` for the largest sigma."""
    offsets = torch.arange(-reach, reach + 1, device=sigma.device)
    radius = pil_box_radius(sigma).view(-1, 1)
    # weight of tap d: 1 for |d| <= l, a = r - l for |d| = l + 1, 0 beyond, over 2 r + 1
    box = (radius + 1.0 - offsets.abs().to(sigma.dtype).view(1, -1)).clamp_(0.0, 1.0)
    box = _band_matrices(box / (2.0 * radius + 1.0), _replicate_taps(size, offsets))
    return box @ box @ box
