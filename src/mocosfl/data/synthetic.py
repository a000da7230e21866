"""Procedural oriented colour gratings, deterministic from a seed: no files, no network."""

from __future__ import annotations

import numpy as np
import torch

from mocosfl.errors import ConfigError

from .image_set import ImageSet, check_split

__all__ = ["make_synthetic"]

_GOLDEN = 0.6180339887498949
_SYN_CHUNK = 1024


def _class_params(num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orientation (radians, in [0, pi/2) so a horizontal flip maps no class onto another),
    spatial frequency (cycles per image) and RGB tint (per channel in [-1, 1]) of each class."""
    c = np.arange(num_classes, dtype=np.float64)
    theta = 0.5 * np.pi * ((c * _GOLDEN) % 1.0)
    freq = 1.5 + 3.0 * ((c * np.sqrt(2.0)) % 1.0)
    hue = c / max(num_classes, 1)
    tint = np.stack([np.cos(2 * np.pi * (hue - k / 3.0)) for k in range(3)], axis=1)
    return theta, freq, 0.35 + 0.65 * (tint + 1.0) / 2.0


def make_synthetic(
    split: str,
    image_size: int = 32,
    num_classes: int = 10,
    train_size: int = 2000,
    test_size: int = 500,
    seed: int = 0,
) -> ImageSet:
    """Procedural classes a small CNN can learn, deterministic from ``seed``.

    Class ``c`` is a sinusoidal grating with a class-specific orientation, frequency and colour
    tint under a Gaussian window; every image draws its own phase, window position, orientation
    jitter (+-4 degrees), contrast, brightness and pixel noise. Labels are balanced and shuffled.
    The train and test splits are independent draws from the same classes.
    """
    check_split(split)
    num_classes, image_size = int(num_classes), int(image_size)
    n = int(train_size if split == "train" else test_size)
    if num_classes < 2:
        raise ConfigError(f"data.synthetic.num_classes={num_classes}; use at least 2")
    if n < 1:
        raise ConfigError(f"data.synthetic.{split}_size={n}; use at least 1")
    split_id = 0 if split == "train" else 1
    rng = np.random.default_rng([int(seed), split_id, 7])
    labels = rng.permutation(np.arange(n) % num_classes)
    theta_c, freq_c, tint_c = _class_params(num_classes)
    theta = theta_c[labels] + rng.uniform(-1.0, 1.0, n) * np.deg2rad(4.0)
    freq = freq_c[labels] * rng.uniform(0.9, 1.1, n)
    phase = rng.uniform(0.0, 2.0 * np.pi, n)
    centre = rng.uniform(-0.2, 0.2, (n, 2))
    width = rng.uniform(0.3, 0.45, n)
    contrast = rng.uniform(0.55, 1.0, n)
    bright = rng.uniform(0.4, 0.6, n)

    coords = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size - 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    for start in range(0, n, _SYN_CHUNK):
        sl = slice(start, min(start + _SYN_CHUNK, n))
        m = sl.stop - sl.start

        def col(a: np.ndarray, sl: slice = sl, m: int = m) -> np.ndarray:
            return a[sl].astype(np.float32).reshape(m, 1, 1)

        u = xx * col(np.cos(theta)) + yy * col(np.sin(theta))
        wave = np.cos(2.0 * np.pi * col(freq) * u + col(phase))
        r2 = (xx - col(centre[:, 0])) ** 2 + (yy - col(centre[:, 1])) ** 2
        window = np.exp(-r2 / (2.0 * col(width) ** 2))
        pattern = (col(contrast) * 0.5) * wave * window  # [m, S, S] in [-0.5, 0.5]
        tint = tint_c[labels[sl]].astype(np.float32).reshape(m, 3, 1, 1)
        img = col(bright)[:, None] + tint * pattern[:, None]
        noise_rng = np.random.default_rng([int(seed), split_id, 11, start // _SYN_CHUNK])
        img += 0.05 * noise_rng.standard_normal(img.shape, dtype=np.float32)
        images[sl] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    classes = [f"class{c}" for c in range(num_classes)]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), classes)
