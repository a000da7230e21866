"""Every data set becomes one in-memory uint8 tensor ``[N, 3, H, W]`` plus int64 labels.

``load_image_set(name, root, split, ...)`` supports:

* ``cifar10`` / ``cifar100``: through ``torchvision.datasets.CIFAR10`` / ``CIFAR100`` (which
  downloads when ``download=True`` and the files are missing). torchvision refuses files whose md5
  differs from the published batches, so when the batch files are present but fail that check
  (e.g. tiny files written by a test, or a re-pickled copy), they are read directly in the same
  original pickle format (``data_batch_1..5`` + ``test_batch`` with ``b"labels"`` for CIFAR-10,
  ``train`` + ``test`` with ``b"fine_labels"`` for CIFAR-100; ``batches.meta`` / ``meta`` for the
  class names), without touching the network. Files that cannot be read at all are re-downloaded
  when ``download=True``. Missing files offline raise :class:`ConfigError` naming the remedies.
* ``imagefolder``: ``root/train/<class>/*`` and ``root/test/<class>/*``; every image is decoded
  once with PIL (a process pool on large folders), converted to RGB and resized to
  ``image_size`` x ``image_size`` (bilinear, aspect ratio not kept) when it differs. The decoded
  tensors are cached in ``root/.mocosfl-cache-<split>-<size>.pt`` when ``root`` is writable; the
  cache is keyed by the list of files with their sizes and modification times.
* ``synthetic``: procedural oriented colour gratings, deterministic from a seed (see
  :func:`make_synthetic`).
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import pickle
import socket
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError

__all__ = [
    "DATASET_NAMES",
    "DATASET_STATS",
    "DEFAULT_STATS",
    "NAMED_STATS",
    "STATS_CHOICES",
    "ImageSet",
    "Stats",
    "load_cifar",
    "load_image_folder",
    "load_image_set",
    "make_synthetic",
    "pixel_stats",
]

DATASET_NAMES = ("cifar10", "cifar100", "imagefolder", "synthetic")

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]  # per-channel mean, std

# Normalisation statistics on [0, 1] pixels, by ``data.stats`` name: the values the original
# normalises CIFAR-10, CIFAR-100 and ImageNet-12 with, each data set its own (docs/differences.md,
# row "normalisation statistics"). Its CIFAR-10 std, kept here, is not the std over the training
# pixels, about (0.247, 0.243, 0.261).
NAMED_STATS: dict[str, Stats] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": (
        (0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
        (0.2673342858792401, 0.2564384629170883, 0.27615047132568404),
    ),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet-12 in the original
}
STATS_CHOICES = (*NAMED_STATS, "computed")  # computed: from the training split (pixel_stats)
# What each data set normalises with when ``data.stats`` is not given. An image folder can hold
# anything, so its own pixels decide; the synthetic images keep CIFAR-10's fixed values, so that
# they do not depend on data.synthetic.* and smoke-test runs stay as they were.
DEFAULT_STATS = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "imagefolder": "computed",
    "synthetic": "cifar10",
}
DATASET_STATS: dict[str, Stats] = {
    name: NAMED_STATS[stats] for name, stats in DEFAULT_STATS.items() if stats in NAMED_STATS
}
_STATS_PIXELS_PER_CHUNK = 1 << 22  # bounds the copy pixel_stats makes of one channel

_DOWNLOAD_SOCKET_TIMEOUT_S = 30.0


@dataclass
class ImageSet:
    """A whole split in memory."""

    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def pixel_stats(images: torch.Tensor) -> Stats:
    """Per-channel mean and (population) std on [0, 1] of uint8 images ``[N, 3, H, W]``.

    Counted as one 256-bin histogram per channel, a chunk of images at a time: exact, and the
    only copy is one channel of one chunk, never a float copy of the whole set.
    """
    n, _, height, width = images.shape
    chunk = max(1, _STATS_PIXELS_PER_CHUNK // (height * width))
    counts = torch.zeros(3, 256, dtype=torch.int64)
    for start in range(0, n, chunk):
        block = images[start : start + chunk]
        for c in range(3):
            counts[c] += torch.bincount(block[:, c].reshape(-1), minlength=256)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    share = counts.double() / counts.sum(dim=1, keepdim=True)
    mean = (share * levels).sum(dim=1)
    std = (share * (levels - mean.view(3, 1)) ** 2).sum(dim=1).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'")


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch to size x size (bilinear, antialiased), in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], 4096):
        x = images[i : i + 4096].float()
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[i : i + 4096] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def load_image_set(
    name: str,
    root: str,
    split: str,
    download: bool = True,
    image_size: int = 32,
    synthetic: dict | None = None,
) -> ImageSet:
    """Load one split of a data set as an :class:`ImageSet` (see the module docstring)."""
    _check_split(split)
    if int(image_size) < 8:
        raise ConfigError(f"data.image_size={image_size} is too small; use at least 8")
    key = str(name).lower()
    if key in ("cifar10", "cifar100"):
        return load_cifar(key, root, split, download=download, image_size=image_size)
    if key == "imagefolder":
        return load_image_folder(root, split, image_size=image_size)
    if key == "synthetic":
        return make_synthetic(split, image_size=image_size, **dict(synthetic or {}))
    raise ConfigError(
        f"unknown data set {name!r}; use one of {', '.join(DATASET_NAMES)} (data=<name>)"
    )


# ------------------------------------------------------------------------------------------
# CIFAR
# ------------------------------------------------------------------------------------------
_CIFAR = {
    "cifar10": {
        "title": "CIFAR-10",
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "meta_key": "label_names",
        "label_key": "labels",
    },
    "cifar100": {
        "title": "CIFAR-100",
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "meta_key": "fine_label_names",
        "label_key": "fine_labels",
    },
}


def _cifar_files_present(info: dict, root: str) -> bool:
    folder = os.path.join(root, info["folder"])
    names = info["train"] + info["test"] + [info["meta"]]
    return all(os.path.isfile(os.path.join(folder, n)) for n in names)


def _unpickle(path: str) -> dict:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict):
        raise ValueError("not a pickled dict")
    # Files written with protocol 2+ from Python 3 may keep bytes keys; normalise to str.
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


def _read_cifar_pickles(info: dict, root: str, split: str) -> ImageSet:
    """Read the original CIFAR pickle batches directly (same format torchvision reads)."""
    folder = os.path.join(root, info["folder"])
    datas, labels = [], []
    for fname in info[split]:
        entry = _unpickle(os.path.join(folder, fname))
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{fname}: 'data' has shape {data.shape}, expected [n, 3072]")
        lab = entry.get(info["label_key"], entry.get("labels"))
        if lab is None:
            raise ValueError(f"{fname}: no {info['label_key']!r} entry")
        lab = np.asarray(lab, dtype=np.int64)
        if lab.shape[0] != data.shape[0]:
            raise ValueError(f"{fname}: {data.shape[0]} images but {lab.shape[0]} labels")
        datas.append(data)
        labels.append(lab)
    meta = _unpickle(os.path.join(folder, info["meta"]))
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[info["meta_key"]]]
    images = np.concatenate(datas).reshape(-1, 3, 32, 32)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(np.concatenate(labels)), classes)


def _reason(exc: BaseException, limit: int = 160) -> str:
    """``Type: message`` on one line, shortened."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _torchvision_cifar(key: str, root: str, split: str, download: bool) -> ImageSet:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if key == "cifar10" else CIFAR100
    old = socket.getdefaulttimeout()
    if download and old is None:  # never hang forever on a dead network
        socket.setdefaulttimeout(_DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        ds = cls(root, train=(split == "train"), download=download)
    finally:
        socket.setdefaulttimeout(old)
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    labels = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
    return ImageSet(images, labels, list(ds.classes))


def load_cifar(
    name: str, root: str, split: str, download: bool = True, image_size: int = 32
) -> ImageSet:
    """CIFAR-10 / CIFAR-100 from ``root`` (torchvision layout), downloading when allowed."""
    _check_split(split)
    info = _CIFAR[name]
    root = os.path.expanduser(str(root))
    title, folder = info["title"], os.path.join(root, info["folder"])
    remedies = (
        f"Fix: run with network access and data.download=true, copy {info['archive']} or "
        f"the {info['folder']} folder into {root}, or use data=imagefolder data.root=<folder> "
        "(or data=synthetic)"
    )
    result: ImageSet | None = None
    problem = f"{title} not found in {root}"
    if _cifar_files_present(info, root):
        try:  # md5-checked read; no network since the files are there
            result = _torchvision_cifar(name, root, split, download=False)
        except RuntimeError:
            try:  # the files exist but are not the published ones: read the same format
                result = _read_cifar_pickles(info, root, split)
            except Exception as exc:
                problem = f"{title} files in {folder} are unreadable ({_reason(exc)})"
                if not download:
                    raise ConfigError(
                        f"{problem}; delete them and set data.download=true, or copy intact files"
                    ) from None
    if result is None:
        if not download:
            raise ConfigError(f"{problem} and data.download=false. {remedies}")
        try:
            result = _torchvision_cifar(name, root, split, download=True)
        except Exception as exc:
            raise ConfigError(
                f"{problem} and it could not be downloaded ({_reason(exc)}). {remedies}"
            ) from None
    if image_size != 32:
        result.images = _resize_uint8(result.images, image_size)
    return result


# ------------------------------------------------------------------------------------------
# Image folders
# ------------------------------------------------------------------------------------------
_POOL_MIN_FILES = 2000  # below this a process pool costs more than it saves
_CHUNK = 500


def _image_extensions() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _decode_one(path: str, size: int, formats: dict[str, str]) -> np.ndarray:
    from PIL import Image

    with open(path, "rb") as f:
        data = f.read()
    fmt = formats.get(os.path.splitext(path)[1].lower())
    try:  # the extension's format first (skips PIL's format probing), then any format
        im = Image.open(io.BytesIO(data), formats=[fmt] if fmt else None)
    except Exception:
        if not fmt:
            raise
        im = Image.open(io.BytesIO(data))
    with im:
        if im.format == "JPEG" and min(im.size) >= 2 * size:
            im.draft("RGB", (size, size))  # let libjpeg downscale large photos while decoding
        if im.mode != "RGB":
            im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise ValueError(f"decoded to shape {arr.shape}")
    return arr


def _decode_chunk(args: tuple[list[str], int]) -> tuple[np.ndarray, tuple[str, str] | None]:
    """Decode a list of files into [n, size, size, 3]; stops at the first unreadable file."""
    from PIL import Image

    paths, size = args
    formats = Image.registered_extensions()
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            out[i] = _decode_one(p, size, formats)
        except Exception as exc:
            return out[:i], (p, f"{type(exc).__name__}: {exc}")
    return out, None


def _decode_files(paths: list[str], size: int, workers: int | None = None) -> np.ndarray:
    """Decode every file to uint8 [N, 3, size, size]; ConfigError naming the first bad file."""
    chunks = [(paths[i : i + _CHUNK], size) for i in range(0, len(paths), _CHUNK)]
    if workers is None:
        if hasattr(os, "sched_getaffinity"):
            workers = min(len(os.sched_getaffinity(0)), 16)
        else:
            workers = min(os.cpu_count() or 1, 16)
    use_pool = (
        workers > 1
        and len(paths) >= _POOL_MIN_FILES
        and not multiprocessing.current_process().daemon
    )
    if use_pool:
        # spawn, not fork: a child forked while another thread of this process holds a lock
        # (torch's, a logger's) can wait on it forever; it hung a test run here once.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_decode_chunk, chunks, chunksize=1)
    else:
        results = [_decode_chunk(c) for c in chunks]
    for _, err in results:
        if err is not None:
            path, reason = err
            raise ConfigError(f"cannot read image {path} ({reason}); delete or replace the file")
    arr = np.concatenate([r for r, _ in results]) if results else np.empty((0, size, size, 3))
    return np.ascontiguousarray(arr.astype(np.uint8, copy=False).transpose(0, 3, 1, 2))


def _list_image_folder(root: str, split: str) -> tuple[list[str], list[str], list[int], str]:
    """Files of root/<split>/<class>/*, classes (union over train and test), labels, fingerprint."""
    split_dir = os.path.join(root, split)
    layout = (
        f"expected {os.path.join(root, 'train')}/<class>/<image> and "
        f"{os.path.join(root, 'test')}/<class>/<image> (set data.root to the folder that holds "
        "train/ and test/)"
    )
    if not os.path.isdir(split_dir):
        raise ConfigError(f"image folder {split_dir} not found; {layout}")
    class_names: set[str] = set()
    for s in ("train", "test"):
        d = os.path.join(root, s)
        if os.path.isdir(d):
            class_names.update(
                e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith(".")
            )
    classes = sorted(class_names)
    exts = _image_extensions()
    paths: list[str] = []
    labels: list[int] = []
    digest = hashlib.sha1()
    for ci, cname in enumerate(classes):
        cdir = os.path.join(split_dir, cname)
        if not os.path.isdir(cdir):
            continue
        entries = sorted(
            (e for e in os.scandir(cdir) if e.is_file() and not e.name.startswith(".")),
            key=lambda e: e.name,
        )
        for e in entries:
            if os.path.splitext(e.name)[1].lower() not in exts:
                continue
            st = e.stat()
            paths.append(e.path)
            labels.append(ci)
            digest.update(f"{cname}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if not paths:
        raise ConfigError(f"no image files found under {split_dir}; {layout}")
    return paths, classes, labels, digest.hexdigest()


def _cache_path(root: str, split: str, size: int) -> str:
    return os.path.join(root, f".mocosfl-cache-{split}-{size}.pt")


def load_image_folder(
    root: str, split: str, image_size: int = 32, use_cache: bool = True
) -> ImageSet:
    """Decode ``root/<split>/<class>/*`` once into memory (cached next to the images)."""
    _check_split(split)
    root = os.path.expanduser(str(root))
    paths, classes, labels, fingerprint = _list_image_folder(root, split)
    cache = _cache_path(root, split, image_size)
    if use_cache and os.path.isfile(cache):
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
            if blob.get("fingerprint") == fingerprint and blob.get("classes") == classes:
                return ImageSet(blob["images"], blob["labels"], list(blob["classes"]))
        except Exception:
            pass
    images = torch.from_numpy(_decode_files(paths, image_size))
    result = ImageSet(images, torch.tensor(labels, dtype=torch.int64), classes)
    if use_cache and os.access(root, os.W_OK):
        blob = {
            "fingerprint": fingerprint,
            "classes": classes,
            "images": result.images,
            "labels": result.labels,
        }
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".mocosfl-cache-", suffix=".tmp", dir=root)
            with os.fdopen(fd, "wb") as f:
                torch.save(blob, f)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600
            os.replace(tmp, cache)
            tmp = None
        except OSError as exc:
            warnings.warn(f"could not write the decoded-image cache {cache}: {exc}", stacklevel=2)
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    return result


# ------------------------------------------------------------------------------------------
# Synthetic
# ------------------------------------------------------------------------------------------
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
    _check_split(split)
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
