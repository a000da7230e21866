"""The data sources: CIFAR in its original pickle format, image folders, synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mocosfl.data import (
    DATASET_STATS,
    load_image_set,
    make_synthetic,
)
from mocosfl.data import image_folder as image_folder_mod
from mocosfl.errors import ConfigError

from data_helpers import (
    CIFAR10_CLASSES,
    one_line,
    write_image_tree,
    write_tiny_cifar10,
    write_tiny_cifar100,
)

MEAN, STD = DATASET_STATS["cifar10"]


@pytest.mark.parametrize("download", [False, True])
def test_cifar10_reads_original_pickle_format(tmp_path, download, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def no_network(*args, **kwargs):
        raise AssertionError("present files went to the network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    written = write_tiny_cifar10(tmp_path)
    for split in ("train", "test"):
        s = load_image_set("cifar10", str(tmp_path), split, download=download)
        data, labels = written[split]
        assert s.images.dtype == torch.uint8 and s.images.shape == (data.shape[0], 3, 32, 32)
        assert np.array_equal(s.images.reshape(-1, 3072).numpy(), data)
        assert s.labels.dtype == torch.int64 and np.array_equal(s.labels.numpy(), labels)
        assert s.classes == CIFAR10_CLASSES


def test_cifar100_reads_original_pickle_format(tmp_path):
    written = write_tiny_cifar100(tmp_path)
    for split in ("train", "test"):
        s = load_image_set("cifar100", str(tmp_path), split, download=False)
        data, fine = written[split]
        assert np.array_equal(s.images.reshape(-1, 3072).numpy(), data)
        assert np.array_equal(s.labels.numpy(), fine)
        assert len(s.classes) == 100 and s.classes[7] == "c07"


def test_cifar_resized_on_load(tmp_path):
    write_tiny_cifar10(tmp_path)
    s = load_image_set("cifar10", str(tmp_path), "test", download=False, image_size=16)
    assert s.images.shape == (6, 3, 16, 16) and s.images.dtype == torch.uint8


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10"), ("cifar100", "cifar-100")])
def test_cifar_missing_offline_no_download(tmp_path, name, folder):
    with pytest.raises(ConfigError) as exc:
        load_image_set(name, str(tmp_path), "train", download=False)
    msg = one_line(exc)
    assert str(tmp_path) in msg and "download" in msg
    assert f"{folder}-python.tar.gz" in msg and "imagefolder" in msg


def test_cifar_missing_download_fails_fast(tmp_path, monkeypatch):
    """download=True with no network: torchvision's real download path runs and fails; the
    failure is simulated at the network call so the test never depends on (or uses) a network."""
    import urllib.error

    import torchvision.datasets.cifar as tv_cifar

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(ConfigError) as exc:
        load_image_set("cifar10", str(tmp_path), "train", download=True)
    assert calls, "torchvision's download was not attempted"
    msg = one_line(exc)
    assert "could not be downloaded" in msg and "Name or service" in msg
    assert "cifar-10-python.tar.gz" in msg and "imagefolder" in msg


def test_cifar_corrupt_files(tmp_path):
    write_tiny_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError) as exc:
        load_image_set("cifar10", str(tmp_path), "train", download=False)
    assert "unreadable" in one_line(exc)


def test_unknown_dataset():
    with pytest.raises(ConfigError) as exc:
        load_image_set("mnist", "/nonexistent", "train")
    msg = one_line(exc)
    for name in ("cifar10", "cifar100", "imagefolder", "synthetic"):
        assert name in msg


# Image folders
def test_imagefolder_loads_and_caches(tmp_path, monkeypatch):
    from PIL import Image

    files = write_image_tree(tmp_path, size=(40, 30))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    s = load_image_set("imagefolder", str(tmp_path), "train", image_size=32)
    assert s.classes == ["cat", "dog", "frog"]
    assert s.images.shape == (12, 3, 32, 32) and s.images.dtype == torch.uint8
    assert s.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    ref = np.asarray(Image.open(files["train"][0]).convert("RGB").resize((32, 32), Image.BILINEAR))
    assert np.array_equal(s.images[0].permute(1, 2, 0).numpy(), ref)
    # class means follow the colours written (60, 120, 180)
    means = [s.images[s.labels == c].float().mean().item() for c in range(3)]
    assert means[0] < means[1] < means[2]
    cache = tmp_path / ".mocosfl-cache-train-32.pt"
    assert cache.is_file()

    def no_decode(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(image_folder_mod, "_decode_files", no_decode)
    again = load_image_set("imagefolder", str(tmp_path), "train", image_size=32)
    assert torch.equal(again.images, s.images) and torch.equal(again.labels, s.labels)
    # a changed folder invalidates the cache
    monkeypatch.undo()
    write_image_tree(tmp_path, classes=("cat",), per_class={"train": 5}, seed=9)
    changed = load_image_set("imagefolder", str(tmp_path), "train", image_size=32)
    assert changed.images.shape[0] == 13

    test = load_image_set("imagefolder", str(tmp_path), "test", image_size=32)
    assert test.classes == s.classes and test.images.shape == (6, 3, 32, 32)


def test_imagefolder_process_pool(tmp_path, monkeypatch):
    write_image_tree(tmp_path, per_class={"train": 6, "test": 1})
    serial = image_folder_mod.load_image_folder(str(tmp_path), "train", use_cache=False)
    monkeypatch.setattr(image_folder_mod, "_POOL_MIN_FILES", 1)
    monkeypatch.setattr(image_folder_mod, "_CHUNK", 4)
    pooled = image_folder_mod.load_image_folder(str(tmp_path), "train", use_cache=False)
    assert torch.equal(serial.images, pooled.images)
    bad = tmp_path / "train" / "dog" / "0003.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ConfigError) as exc:
        image_folder_mod._decode_files(
            [str(p) for p in sorted((tmp_path / "train").rglob("*.*"))], 32, workers=2
        )
    assert str(bad) in one_line(exc)


def test_imagefolder_corrupt_image_names_file(tmp_path):
    write_image_tree(tmp_path)
    bad = tmp_path / "train" / "dog" / "0001.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ConfigError) as exc:
        load_image_set("imagefolder", str(tmp_path), "train")
    assert str(bad) in one_line(exc)


def test_imagefolder_missing_folder(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_image_set("imagefolder", str(tmp_path / "nowhere"), "train")
    msg = one_line(exc)
    assert "train" in msg and "<class>" in msg
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError) as exc:
        load_image_set("imagefolder", str(tmp_path), "train")
    assert "no image files" in one_line(exc)


# Synthetic
def test_synthetic_shapes_and_determinism():
    a = make_synthetic("train", train_size=3000, seed=4)
    assert a.images.shape == (3000, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.labels.dtype == torch.int64 and len(a.classes) == 10
    assert np.bincount(a.labels.numpy()).tolist() == [300] * 10
    b = make_synthetic("train", train_size=3000, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = make_synthetic("train", train_size=3000, seed=5)
    assert not torch.equal(a.images, c.images)
    test = make_synthetic("test", test_size=50, seed=4, image_size=24, num_classes=5)
    assert test.images.shape == (50, 3, 24, 24) and int(test.labels.max()) == 4
    options = {"test_size": 50, "seed": 4, "num_classes": 5}
    via_loader = load_image_set("synthetic", "", "test", image_size=24, synthetic=options)
    assert torch.equal(via_loader.images, test.images)


def test_synthetic_classes_are_distinguishable():
    """Nearest class centroid on phase-invariant features (|FFT| of the luma + channel std)."""
    train = make_synthetic("train", train_size=1000, seed=0)
    test = make_synthetic("test", test_size=300, seed=0)

    def features(s):
        x = s.images.float() / 255
        g = x.mean(1)
        f = torch.fft.fft2(g - g.mean((1, 2), keepdim=True)).abs().flatten(1)
        return torch.cat([f / f.norm(dim=1, keepdim=True), 3 * x.std((2, 3))], 1)

    ftr, fte = features(train), features(test)
    centroids = torch.stack([ftr[train.labels == c].mean(0) for c in range(10)])
    acc = (torch.cdist(fte, centroids).argmin(1) == test.labels).float().mean().item()
    assert acc > 0.9
