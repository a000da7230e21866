"""Batched, deterministic MoCo v2 augmentation on uint8 image tensors.

The original applies torchvision's PIL transforms image by image (docs/paper.md, "Data"):
``RandomResizedCrop(S, scale=(0.08, 1))``, ``RandomApply(ColorJitter(.4, .4, .4, .1), p=.8)``,
``RandomGrayscale(.2)``, ``RandomApply(GaussianBlur(sigma in [.1, 2]), p=.5)``,
``RandomHorizontalFlip()``, ``Normalize(mean, std)``. Here the same recipe runs on a whole batch
at once, on the device of the input, in float32 on [0, 1] pixels:

* every random number comes from the ``torch.Generator`` passed in, drawn as ONE ``[B, 35]``
  uniform tensor (row ``k`` holds every parameter of image ``k``), so the output is a pure function
  of the input and the generator state, and image ``k``'s views do not depend on the batch size;
* the crop boxes follow torchvision's rejection rule (10 tries, then the centre-crop fallback),
  vectorised over the batch; crop + resize is one ``torchvision.ops.roi_align`` call
  (``aligned=True``, bilinear; one sample per output pixel when the input is not larger than
  ``S``, as for the stored data sets, so the crop is an exact bilinear up-sampling);
* the four colour-jitter ops run in a random order per image (as torchvision's ``ColorJitter``
  does), each op applied to the images that have it in that slot;
* the blur is separable with one kernel per image, written as per-image matrices ``L @ x @ R``
  (padding folded in) so that one batched matmul blurs and, with R's columns reversed, also
  flips; images that are neither blurred nor flipped are left alone. The blur's two strengths,
  ``kernel10`` and ``pil`` (the original's), are those of :mod:`~mocosfl.data.blur`.

Other differences from the PIL pipeline: no 8-bit rounding between ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.ops import roi_align

from .blur import BLUR_KINDS, PIL_PASSES, gaussian_matrices, pil_box_radius, pil_matrices

__all__ = [
    "BLUR_KINDS",
    "MoCoV2Augmentation",
    "hsv_to_rgb",
    "normalize",
    "rgb_to_hsv",
]

_GRAY = (0.2989, 0.587, 0.114)  # the luma weights of torchvision / PIL grayscale
_TRIES = 10  # torchvision's RandomResizedCrop rejection-sampling tries

# Column layout of the per-image uniform draws.
_C_SCALE = slice(0, _TRIES)
_C_RATIO = slice(_TRIES, 2 * _TRIES)
_C_TOP = 2 * _TRIES
_C_LEFT = 2 * _TRIES + 1
_C_JIT_P = 2 * _TRIES + 2
_C_JIT_F = slice(2 * _TRIES + 3, 2 * _TRIES + 7)  # brightness, contrast, saturation, hue
_C_JIT_ORDER = slice(2 * _TRIES + 7, 2 * _TRIES + 11)
_C_GRAY = 2 * _TRIES + 11
_C_BLUR_P = 2 * _TRIES + 12
_C_SIGMA = 2 * _TRIES + 13
_C_FLIP = 2 * _TRIES + 14
_NUM_DRAWS = 2 * _TRIES + 15


def _stats_tensor(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` (or float on [0, 1]) -> float32 normalised, no augmentation."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    return (x - _stats_tensor(mean, x)) / _stats_tensor(std, x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """[n, 3, H, W] -> [n, 1, H, W] luma."""
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Batched RGB -> HSV on [0, 1] floats, ``[n, 3, H, W]``; all three outputs in [0, 1]."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hr = (g - b) / safe
    hg = (b - r) / safe + 2.0
    hb = (r - g) / safe + 4.0
    h = torch.where(maxc == r, hr, torch.where(maxc == g, hg, hb))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack((h, s, maxc), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Batched HSV -> RGB, inverse of :func:`rgb_to_hsv`."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(n + h * 6.0, 6.0)
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp_(0.0, 1.0)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return torch.lerp(mean.expand_as(x), x, f.expand_as(x)).clamp_(0.0, 1.0)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return torch.lerp(_gray(x).expand_as(x), x, f.expand_as(x)).clamp_(0.0, 1.0)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``f`` turns (|f| <= 0.5): the RGB -> HSV -> RGB round trip, fused.

    A hue shift keeps V = max and S * V = max - min, so only the hexcone position ``6 h`` in
    [-1, 5] is computed (as in :func:`rgb_to_hsv`) and fed to the HSV -> RGB formula of
    :func:`hsv_to_rgb`.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    maxc = torch.maximum(torch.maximum(r, g), b)
    delta = maxc - torch.minimum(torch.minimum(r, g), b)
    num = torch.where(
        maxc == r, g - b, torch.where(maxc == g, (b - r) + 2.0 * delta, (r - g) + 4.0 * delta)
    )
    h6 = num / torch.where(delta > 0, delta, torch.ones_like(delta))
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = n + (h6 + 6.0 * f)
    if bool((f.abs() <= 1.0 / 6.0).all()):
        # k in [-1, 11]: one conditional wrap is enough (the formula is 0 on [-1, 0) anyway),
        # and it is cheaper than torch.remainder.
        k = torch.where(k >= 6.0, k - 6.0, k)
    else:
        k = torch.remainder(k, 6.0)
    return maxc - delta * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)


class MoCoV2Augmentation:
    """MoCo v2 augmentation of a uint8 batch, every random draw taken from ``generator``.

    ``__call__(images uint8 [B, 3, H, W], generator) -> float32 [B, 3, S, S]`` (normalised), on
    the device of ``images``. Random numbers are drawn on the generator's device and moved, so a
    CPU generator gives the same parameters for CPU and GPU inputs.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        min_scale: float = 0.08,
        *,
        max_scale: float = 1.0,
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        jitter_strength: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        flip_p: float = 0.5,
        blur: str = "pil",
    ) -> None:
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.scale = (float(min_scale), float(max_scale))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.jitter_strength = tuple(float(v) for v in jitter_strength)
        self.jitter_p = float(jitter_p)
        self.grayscale_p = float(grayscale_p)
        self.blur_p = float(blur_p)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.flip_p = float(flip_p)
        if blur not in BLUR_KINDS:
            raise ValueError(f"blur={blur!r}; use one of {', '.join(BLUR_KINDS)}")
        self.blur = blur
        # Taps of the whole 1-D blur kernel: kernel10's Gaussian, or pil's three box passes.
        if blur == "kernel10":
            k = max(3, int(0.1 * self.image_size))
            self.blur_kernel_size = k if k % 2 == 1 else k + 1
        else:
            self._box_reach = int(pil_box_radius(torch.tensor(self.blur_sigma[1]))) + 1
            self.blur_kernel_size = 2 * PIL_PASSES * self._box_reach + 1

    def __repr__(self) -> str:
        return (
            f"MoCoV2Augmentation(size={self.image_size}, scale={self.scale}, "
            f"jitter={self.jitter_strength}@{self.jitter_p}, gray={self.grayscale_p}, "
            f"blur({self.blur}, k={self.blur_kernel_size}, sigma={self.blur_sigma})@{self.blur_p}, "
            f"flip={self.flip_p})"
        )

    # -- crop ------------------------------------------------------------------------------
    def _crop_boxes(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """torchvision's RandomResizedCrop.get_params, vectorised. Returns [B, 4] x1, y1, x2, y2."""
        area = float(height * width)
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        target_area = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, _C_SCALE])
        aspect = torch.exp(lo + (hi - lo) * u[:, _C_RATIO])
        w = torch.round(torch.sqrt(target_area * aspect))
        h = torch.round(torch.sqrt(target_area / aspect))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.argmax(ok.to(torch.int8), dim=1, keepdim=True)  # first valid try
        any_ok = ok.any(dim=1)
        w = torch.gather(w, 1, first).squeeze(1)
        h = torch.gather(h, 1, first).squeeze(1)
        top = torch.floor(u[:, _C_TOP] * (height - h + 1)).clamp_(max=height - h)
        left = torch.floor(u[:, _C_LEFT] * (width - w + 1)).clamp_(max=width - w)
        # Centre-crop fallback (torchvision: clamp the aspect ratio into ``ratio``).
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fh, fw = height, round(height * self.ratio[1])
        else:
            fw, fh = width, height
        w = torch.where(any_ok, w, torch.full_like(w, fw))
        h = torch.where(any_ok, h, torch.full_like(h, fh))
        top = torch.where(any_ok, top, torch.full_like(top, (height - fh) // 2))
        left = torch.where(any_ok, left, torch.full_like(left, (width - fw) // 2))
        return torch.stack((left, top, left + w, top + h), dim=1)

    # -- blur + flip -----------------------------------------------------------------------
    def _blur_flip_matrices(
        self, sigma: torch.Tensor, blur: torch.Tensor, flip: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image [n, S, S] matrices L, R with ``blur+flip(x) = L @ x @ R``.

        L is the vertical 1-D blur of ``self.blur`` (padding folded into the matrix), R the
        horizontal one, with its columns reversed for flipped images. Unblurred images get the
        identity.
        """
        n = sigma.shape[0]
        if self.blur == "kernel10":
            mat = gaussian_matrices(sigma, size, self.blur_kernel_size)
        else:
            mat = pil_matrices(sigma, size, self._box_reach)
        mat = torch.where(blur.view(n, 1, 1), mat, torch.eye(size, device=sigma.device))
        right = mat.transpose(1, 2)
        right = torch.where(flip.view(n, 1, 1), right.flip(2), right)
        return mat, right

    # -- main ------------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.draws(images.shape[0], generator))

    @staticmethod
    def draws(n: int, generator: torch.Generator) -> torch.Tensor:
        """The random numbers of ``n`` images, [n, 35]: row k is all that image k's views take,
        so a client can augment its own rows of a pool's batch alone (``mocosfl.deploy``)."""
        return torch.rand(n, _NUM_DRAWS, generator=generator, device=generator.device)

    @torch.no_grad()
    def apply(self, images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """The augmentation of ``images`` [B, 3, H, W] with the random numbers ``draws``
        [B, 35] (:meth:`draws`)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        device = images.device
        n, _, height, width = images.shape
        s = self.image_size
        if n == 0:
            return torch.empty(0, 3, s, s, device=device)
        u = draws.to(device=device, dtype=torch.float32)

        if images.dtype == torch.uint8:
            x = images.float().mul_(1.0 / 255.0)
        else:  # float input is taken to be on [0, 1]
            x = images.float()

        # RandomResizedCrop: one roi_align call for the whole batch.
        boxes = self._crop_boxes(u, height, width)
        rois = torch.cat((torch.arange(n, device=device, dtype=x.dtype).view(n, 1), boxes), 1)
        ratio = max(1, math.ceil(max(height, width) / s))  # 1 unless the input is larger than S
        x = roi_align(x, rois, (s, s), spatial_scale=1.0, sampling_ratio=ratio, aligned=True)

        # ColorJitter with p, the four ops in a random order per image.
        jb, jc, js, jh = self.jitter_strength
        f = u[:, _C_JIT_F]
        factors = (
            1.0 - jb + 2.0 * jb * f[:, 0],
            1.0 - jc + 2.0 * jc * f[:, 1],
            1.0 - js + 2.0 * js * f[:, 2],
            -jh + 2.0 * jh * f[:, 3],
        )
        jitter = u[:, _C_JIT_P] < self.jitter_p
        order = torch.argsort(u[:, _C_JIT_ORDER], dim=1)  # order[:, slot] = op id
        if bool(jitter.any()):
            for slot in range(4):
                for op_id, op in enumerate(_JITTER_OPS):
                    sel = torch.nonzero(jitter & (order[:, slot] == op_id)).squeeze(1)
                    if sel.numel():
                        x[sel] = op(x[sel], factors[op_id][sel].view(-1, 1, 1, 1))

        # RandomGrayscale.
        gray = torch.nonzero(u[:, _C_GRAY] < self.grayscale_p).squeeze(1)
        if gray.numel():
            x[gray] = _gray(x[gray]).expand(-1, 3, -1, -1)

        # GaussianBlur with p (sigma ~ U[sigma_min, sigma_max] per image), then the horizontal
        # flip: both are linear, so they run as one per-image map L @ x @ R on the images that
        # need either.
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u[:, _C_SIGMA]
        blur = u[:, _C_BLUR_P] < self.blur_p
        flip = u[:, _C_FLIP] < self.flip_p
        sel = torch.nonzero(blur | flip).squeeze(1)
        if sel.numel():
            left, right = self._blur_flip_matrices(sigma[sel], blur[sel], flip[sel], s)
            x[sel] = left.unsqueeze(1) @ x[sel] @ right.unsqueeze(1)

        # Normalize.
        return x.sub_(_stats_tensor(self.mean, x)).div_(_stats_tensor(self.std, x))
