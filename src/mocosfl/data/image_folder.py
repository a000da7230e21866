"""An image folder: ``root/train/<class>/*`` and ``root/test/<class>/*``. Every image is decoded
once with PIL (a process pool on large folders), converted to RGB and resized to ``image_size`` x
``image_size`` (bilinear, aspect ratio not kept) when it differs. The decoded tensors are cached
in ``root/.mocosfl-cache-<split>-<size>.pt`` when ``root`` is writable; the cache is keyed by the
list of files with their sizes and modification times."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import tempfile
import warnings

import numpy as np
import torch

from mocosfl.errors import ConfigError

from .image_set import ImageSet, check_split

__all__ = ["load_image_folder"]

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
    check_split(split)
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
