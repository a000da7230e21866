"""Tests for mocosfl.data: partitions, loaders, augmentation and the federated data module."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    import mocosfl  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mocosfl.data import (
    DATASET_STATS,
    MoCoV2Augmentation,
    StepSampler,
    label_counts,
    load_image_set,
    make_partition,
    make_synthetic,
    normalize,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from mocosfl.data import image_folder as image_folder_mod
from mocosfl.data import transforms as transforms_mod
from mocosfl.errors import ConfigError

from data_helpers import (
    CIFAR10_CLASSES,
    federated_datamodule,
    write_image_tree,
    write_tiny_cifar10,
    write_tiny_cifar100,
)

MEAN, STD = DATASET_STATS["cifar10"]


def _labels(n_per_class=(120, 95, 130, 80, 100, 110, 90, 105, 125, 85), seed=0):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    return np.random.default_rng(seed).permutation(labels)


def _assert_exact_cover(parts, n):
    allidx = np.concatenate(parts)
    assert allidx.dtype == np.int64
    assert allidx.shape[0] == n
    assert np.array_equal(np.sort(allidx), np.arange(n))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------------------
# Partitions
# ---------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*shards for")
@pytest.mark.parametrize("kind", ["iid", "shards", "dirichlet"])
@pytest.mark.parametrize("num_clients", [1, 7, 40])
def test_partition_covers_every_index_once(kind, num_clients):
    labels = _labels()
    parts = make_partition(kind, labels, num_clients, seed=3, classes_per_client=2)
    assert len(parts) == num_clients
    _assert_exact_cover(parts, labels.shape[0])
    assert min(p.shape[0] for p in parts) >= 1


def test_iid_near_equal_chunks():
    parts = partition_iid(1003, 10, seed=0)
    sizes = [p.shape[0] for p in parts]
    assert max(sizes) - min(sizes) <= 1
    _assert_exact_cover(parts, 1003)


@pytest.mark.parametrize("num_clients,cpc", [(5, 2), (20, 2), (7, 3), (100, 1), (10, 1)])
def test_shards_classes_per_client(num_clients, cpc):
    labels = _labels()
    parts = partition_shards(labels, num_clients, cpc, seed=1)
    _assert_exact_cover(parts, labels.shape[0])
    num_shards = num_clients * cpc
    for p in parts:
        assert len(np.unique(labels[p])) <= cpc
    # Every client holds exactly cpc shards of near-equal size: its size lies within cpc times
    # the range of shard sizes (the class sizes here differ by at most a factor 130/80).
    sizes = np.array([p.shape[0] for p in parts])
    mean_shard = labels.shape[0] / num_shards
    assert sizes.min() >= cpc * math.floor(mean_shard * 0.6)
    assert sizes.max() <= cpc * math.ceil(mean_shard * 1.5)


def test_shards_balanced_labels_one_class_per_shard():
    labels = np.repeat(np.arange(10), 50)
    parts = partition_shards(labels, 5, 2, seed=0)  # 10 shards of exactly one class each
    counts = label_counts(labels, parts, 10)
    assert (counts.sum(1) == 100).all()
    assert set(np.unique(counts)) <= {0, 50, 100}


def test_shards_fewer_shards_than_classes_still_cover():
    labels = _labels()
    with pytest.warns(UserWarning, match="shards"):
        parts = partition_shards(labels, 2, 2, seed=0)  # 4 shards, 10 classes
    _assert_exact_cover(parts, labels.shape[0])


def test_dirichlet_skew_depends_on_alpha():
    """Mean over clients of the largest class's share of the client's data. (Splitting each class
    over 10 clients with Dir(0.05) gives about 0.7 here: a client often holds the bulk of two
    classes; 1 / num_classes = 0.1 is perfectly uniform.)"""
    labels = np.repeat(np.arange(10), 1000)

    def mean_max_fraction(alpha, seed=0):
        parts = partition_dirichlet(labels, 10, alpha, seed=seed)
        _assert_exact_cover(parts, labels.shape[0])
        counts = label_counts(labels, parts, 10)
        return float((counts.max(1) / counts.sum(1)).mean())

    skewed = [mean_max_fraction(0.05, seed) for seed in range(3)]
    assert min(skewed) > 0.6
    assert mean_max_fraction(1.0) < min(skewed)
    assert mean_max_fraction(100.0) < 0.15


def test_dirichlet_min_per_client_topped_up():
    labels = np.repeat(np.arange(10), 30)
    parts = partition_dirichlet(labels, 100, 0.01, seed=0, min_per_client=2)
    _assert_exact_cover(parts, 300)
    assert min(p.shape[0] for p in parts) >= 2


@pytest.mark.parametrize("kind", ["iid", "shards", "dirichlet"])
def test_partition_deterministic_from_seed(kind):
    labels = _labels()
    a = make_partition(kind, labels, 9, seed=5)
    b = make_partition(kind, labels, 9, seed=5)
    c = make_partition(kind, labels, 9, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "pathological"},
        {"num_clients": 2000},
        {"num_clients": 0},
        {"kind": "shards", "classes_per_client": 0},
        {"kind": "shards", "num_clients": 600, "classes_per_client": 2},
        {"kind": "dirichlet", "dirichlet_alpha": 0.0},
        {"kind": "dirichlet", "dirichlet_alpha": -1.0},
    ],
)
def test_make_partition_errors(kwargs):
    args = {"kind": "iid", "labels": _labels(), "num_clients": 5, "seed": 0, **kwargs}
    with pytest.raises(ConfigError) as exc:
        make_partition(**args)
    _one_line(exc)


def test_label_counts():
    labels = np.array([0, 1, 1, 2, 2, 2])
    counts = label_counts(labels, [np.array([0, 1]), np.array([2, 3, 4, 5])], 4)
    assert counts.tolist() == [[1, 1, 0, 0], [0, 1, 3, 0]]


# ---------------------------------------------------------------------------------------------
# CIFAR loaders
# ---------------------------------------------------------------------------------------------
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
    msg = _one_line(exc)
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
    msg = _one_line(exc)
    assert "could not be downloaded" in msg and "Name or service" in msg
    assert "cifar-10-python.tar.gz" in msg and "imagefolder" in msg


def test_cifar_corrupt_files(tmp_path):
    write_tiny_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError) as exc:
        load_image_set("cifar10", str(tmp_path), "train", download=False)
    assert "unreadable" in _one_line(exc)


def test_unknown_dataset():
    with pytest.raises(ConfigError) as exc:
        load_image_set("mnist", "/nonexistent", "train")
    msg = _one_line(exc)
    for name in ("cifar10", "cifar100", "imagefolder", "synthetic"):
        assert name in msg


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------
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
    assert str(bad) in _one_line(exc)


def test_imagefolder_corrupt_image_names_file(tmp_path):
    write_image_tree(tmp_path)
    bad = tmp_path / "train" / "dog" / "0001.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ConfigError) as exc:
        load_image_set("imagefolder", str(tmp_path), "train")
    assert str(bad) in _one_line(exc)


def test_imagefolder_missing_folder(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_image_set("imagefolder", str(tmp_path / "nowhere"), "train")
    msg = _one_line(exc)
    assert "train" in msg and "<class>" in msg
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError) as exc:
        load_image_set("imagefolder", str(tmp_path), "train")
    assert "no image files" in _one_line(exc)


# ---------------------------------------------------------------------------------------------
# Synthetic
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------
def _images(n=64, seed=0):
    return make_synthetic("train", train_size=n, seed=seed).images


def test_augmentation_shape_dtype_determinism():
    aug = MoCoV2Augmentation(32, MEAN, STD)
    x = _images()
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == (64, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert abs(a.mean().item()) < 1.0 and 0.4 < a.std().item() < 1.6
    # image k's views do not depend on the batch it is in
    assert torch.equal(aug(x[:5], torch.Generator().manual_seed(0)), a[:5])
    # the global RNG is neither used nor disturbed
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(torch.rand(1), before)


def test_augmentation_resizes_and_crops_to_output_size():
    aug = MoCoV2Augmentation(16, MEAN, STD)
    out = aug(_images(8), torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 16, 16)


def test_augmentation_identity_settings_equal_normalize():
    """Full-image crop, no jitter/gray/blur/flip: the batched pipeline is exactly normalize()."""
    still = dict(min_scale=1.0, ratio=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    aug = MoCoV2Augmentation(32, MEAN, STD, flip_p=0.0, **still)
    x = _images(16)
    out = aug(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, normalize(x, MEAN, STD), atol=1e-5)
    flip = MoCoV2Augmentation(32, MEAN, STD, flip_p=1.0, **still)
    assert torch.allclose(flip(x, torch.Generator()), normalize(x, MEAN, STD).flip(-1), atol=1e-5)


def test_augmentation_ops_match_torchvision():
    import torchvision.transforms.v2.functional as TF

    x = torch.rand(6, 3, 8, 8)
    for hue in (-0.1, 0.04, 0.3):
        ours = transforms_mod._hue(x.clone(), torch.full((6, 1, 1, 1), hue))
        assert torch.allclose(ours, TF.adjust_hue(x, hue), atol=1e-5)
    for f in (0.6, 1.4):
        fac = torch.full((6, 1, 1, 1), f)
        pairs = [
            (transforms_mod._brightness, TF.adjust_brightness),
            (transforms_mod._contrast, TF.adjust_contrast),
            (transforms_mod._saturation, TF.adjust_saturation),
        ]
        for ours, theirs in pairs:
            assert torch.allclose(ours(x.clone(), fac), theirs(x, f), atol=1e-5)
    rt = transforms_mod.hsv_to_rgb(transforms_mod.rgb_to_hsv(x))
    assert torch.allclose(rt, x, atol=1e-5)


def test_augmentation_blur_matrix_matches_reflect_conv():
    aug = MoCoV2Augmentation(32, MEAN, STD, blur="kernel10")
    sigma = torch.tensor([0.5, 1.7])
    left, right = aug._blur_flip_matrices(
        sigma, torch.tensor([True, True]), torch.tensor([False, True]), 32
    )
    x = torch.rand(2, 3, 32, 32)
    y = left.unsqueeze(1) @ x @ right.unsqueeze(1)
    k = aug.blur_kernel_size
    pos = torch.arange(k, dtype=torch.float32) - k // 2
    for i in range(2):
        kern = torch.exp(-(pos**2) / (2 * sigma[i] ** 2))
        kern = kern / kern.sum()
        xp = torch.nn.functional.pad(x[i : i + 1], (k // 2,) * 4, mode="reflect")
        kern2d = (kern[:, None] * kern[None, :]).expand(3, 1, k, k)
        ref = torch.nn.functional.conv2d(xp, kern2d, groups=3)
        if i == 1:
            ref = ref.flip(-1)
        assert torch.allclose(y[i : i + 1], ref, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_on_gpu_matches_cpu():
    aug = MoCoV2Augmentation(32, MEAN, STD)
    x = _images(64)
    cpu = aug(x, torch.Generator().manual_seed(0))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Federated data module
# ---------------------------------------------------------------------------------------------
def _dm(**kw):
    args = dict(
        name="synthetic",
        root="",
        val_images=100,
        num_clients=6,
        clients_per_step=3,
        client_batch_size=4,
        sync_every=3,
        num_workers=0,
        eval_batch_size=64,
        synthetic={"train_size": 400, "test_size": 50, "seed": 0},
        seed=11,
    )
    args.update(kw)
    dm = federated_datamodule(**args)
    dm.setup()
    return dm


def _take(loader, n):
    out = []
    for i, batch in enumerate(loader):
        if i == n:
            break
        out.append(batch)
    return out


def test_datamodule_sizes_and_state():
    dm = _dm()
    dm.setup()  # idempotent
    assert dm.num_classes == 10 and dm.num_train_images == 300 and dm.num_val_images == 100
    assert dm.plan.server_batch_size == 12 and dm.steps_per_epoch == math.ceil(300 / 12)
    assert dm.client_sizes.sum() == 300 and dm.client_sizes.shape == (6,)
    counts = dm.label_counts()
    assert counts.shape == (6, 10) and counts.sum() == 300
    state = dm.partition_state()
    assert set(state) == {"train_indices", "val_indices", "client_indices", "client_offsets"}
    assert np.intersect1d(state["train_indices"], state["val_indices"]).size == 0
    assert np.array_equal(np.sort(state["client_indices"]), state["train_indices"])
    assert state["client_offsets"][-1] == 300
    again = _dm()
    assert all(np.array_equal(v, again.partition_state()[k]) for k, v in state.items())


def test_datamodule_max_train_images_and_shards():
    dm = _dm(max_train_images=120, partition="shards", classes_per_client=2)
    assert dm.num_train_images == 120
    assert ((dm.label_counts() > 0).sum(1) <= 2).all()
    assert dm.steps_per_epoch == 10


def test_eval_dataloader_fixed_order_and_normalised():
    dm = _dm()
    for split, n in (("train", 300), ("val", 100), ("test", 50)):
        batches = list(dm.eval_dataloader(split))
        images = torch.cat([b[0] for b in batches])
        labels = torch.cat([b[1] for b in batches])
        assert images.shape == (n, 3, 32, 32) and images.dtype == torch.float32
        raw, raw_labels = dm.split_images(split)
        assert torch.allclose(images, normalize(raw, MEAN, STD))
        assert torch.equal(labels, raw_labels)
        assert batches[0][0].shape[0] == min(64, n)
        loader = dm.eval_dataloader(split)
        assert len(loader.dataset) == n and len(loader) == math.ceil(n / 64)
        image, label = loader.dataset[3]
        assert torch.equal(image, images[3]) and int(label) == int(labels[3])
    first = next(iter(dm.eval_dataloader("val")))[0]
    assert torch.equal(first, next(iter(dm.eval_dataloader("val")))[0])


def test_batch_structure_and_client_partitions():
    dm = _dm()
    ds = dm.step_dataset()
    parts = dm.client_parts
    batch = ds[5]
    assert batch["query"].shape == (3, 4, 3, 32, 32) and batch["key"].shape == (3, 4, 3, 32, 32)
    assert batch["query"].dtype == torch.float32 and batch["client_ids"].dtype == torch.int64
    assert batch["step"] == 5
    assert not torch.allclose(batch["query"], batch["key"])
    for t in range(40):
        pool, idx = ds.indices_for_step(t)
        assert np.array_equal(pool, dm.plan.pool_for_step(t))
        assert idx.shape == (3, 4)
        for c, row in zip(pool, idx):
            assert np.isin(row, parts[c]).all()


def test_pools_without_replacement_constant_within_round():
    dm = _dm(num_clients=10, clients_per_step=4, sync_every=5)
    pools = [dm.plan.pool_for_step(t) for t in range(200)]
    for t, p in enumerate(pools):
        assert p.shape == (4,) and len(np.unique(p)) == 4 and np.array_equal(p, np.sort(p))
        assert p.min() >= 0 and p.max() < 10
        if t % 5:
            assert np.array_equal(p, pools[t - 1])
    assert len({tuple(p) for p in pools}) > 10
    expected = np.sort(np.random.default_rng([11, 7, 17]).choice(10, 4, replace=False))
    assert np.array_equal(pools[35], expected)
    per_step = _dm(num_clients=10, clients_per_step=4, sync_every=5, pool="step")
    changes = sum(
        not np.array_equal(per_step.plan.pool_for_step(t), per_step.plan.pool_for_step(t + 1))
        for t in range(50)
    )
    assert changes > 40
    no_sync = _dm(num_clients=10, clients_per_step=4, sync_every=0)
    assert np.array_equal(no_sync.plan.pool_for_step(7), per_step.plan.pool_for_step(7))


def test_clients_read_passes_without_replacement():
    dm = _dm(num_clients=10, clients_per_step=4, sync_every=2, client_batch_size=5)
    ds = dm.step_dataset()
    got = {c: [] for c in range(10)}
    for t in range(300):
        pool, idx = ds.indices_for_step(t)
        for c, row in zip(pool, idx):
            got[c].extend(row.tolist())
    for c in range(10):
        n = dm.client_sizes[c]
        stream = np.array(got[c])
        assert stream.shape[0] >= 2 * n
        for j in range(2):  # the first two passes are each a permutation of the partition
            one_pass = stream[j * n : (j + 1) * n]
            assert np.array_equal(np.sort(one_pass), np.sort(dm.client_parts[c]))


def test_small_client_wraps_around():
    dm = _dm(
        num_clients=100,
        clients_per_step=2,
        client_batch_size=8,
        val_images=0,
        synthetic={"train_size": 250, "test_size": 10},
    )
    ds = dm.step_dataset()
    assert (dm.client_sizes < 8).all()
    for t in range(30):
        pool, positions = ds.stream_positions(t)
        _, idx = ds.indices_for_step(t)
        for c, p, row in zip(pool, positions, idx):
            assert np.isin(row, dm.client_parts[c]).all()
            n = int(dm.client_sizes[c])
            start = -p % n  # offset in the row of the first pass boundary
            full = row[start : start + n]
            assert full.shape[0] == n  # b = 8 > 2 * n - 1 here, so a whole pass fits
            assert np.array_equal(np.sort(full), np.sort(dm.client_parts[c]))


def test_participation_counts_cache_matches_brute_force():
    dm = _dm(num_clients=10, clients_per_step=3, sync_every=4)
    ds = dm.step_dataset()
    brute = np.zeros(10, dtype=np.int64)
    positions = {}
    for t in range(120):
        pool = dm.plan.pool_for_step(t)
        positions[t] = brute[pool] * 4
        brute[pool] += 1
    for t in [0, 5, 119, 37, 3, 80, 80, 1]:  # forward, backward, repeated
        pool, pos = ds.stream_positions(t)
        assert np.array_equal(pos, positions[t])


def test_batch_is_pure_function_of_seed_and_step():
    dm = _dm()
    a = dm.step_dataset()[17]
    dm.step_dataset()[3]  # moving the cache around changes nothing
    b = dm.step_dataset()[17]
    c = _dm().step_dataset()[17]
    for other in (b, c):
        assert torch.equal(a["query"], other["query"]) and torch.equal(a["key"], other["key"])
        assert torch.equal(a["client_ids"], other["client_ids"])
    d = _dm(seed=12).step_dataset()[17]
    assert not torch.allclose(a["query"], d["query"])


def test_train_dataloader_workers_identical():
    n = 8
    ref = _take(_dm(num_workers=0).train_dataloader(), n)
    fresh = _take(_dm(num_workers=2).train_dataloader(), n)
    assert [b["step"] for b in ref] == list(range(n))
    for x, y in zip(ref, fresh):
        assert x["step"] == y["step"]
        assert torch.equal(x["client_ids"], y["client_ids"])
        assert torch.equal(x["query"], y["query"]) and torch.equal(x["key"], y["key"])


def test_step_sampler_resumes_mid_epoch():
    sampler = StepSampler(10, lambda: 23)
    assert list(sampler) == list(range(23, 30)) and len(sampler) == 10
    assert list(StepSampler(10, lambda: 20)) == list(range(20, 30))
    assert list(StepSampler(10)) == list(range(10))
    dm = _dm()
    spe = dm.steps_per_epoch
    dm.trainer = types.SimpleNamespace(global_step=spe + 3, global_rank=0, world_size=1)
    loader = dm.train_dataloader()
    assert len(loader) == spe
    batches = list(loader)
    assert [b["step"] for b in batches] == list(range(spe + 3, 2 * spe))
    resumed = batches[0]
    direct = _dm().step_dataset()[spe + 3]
    assert torch.equal(resumed["query"], direct["query"])


def test_each_process_loads_its_contiguous_share_of_the_same_batch():
    whole = next(iter(_dm(clients_per_step=4).train_dataloader()))
    shares = []
    for rank in (0, 1):
        dm = _dm(clients_per_step=4)
        dm.trainer = types.SimpleNamespace(global_step=0, global_rank=rank, world_size=2)
        shares.append(next(iter(dm.train_dataloader())))
    for key in ("query", "key", "client_ids"):
        assert torch.equal(torch.cat([s[key] for s in shares]), whole[key]), key
    assert all(torch.equal(s["pool"], whole["client_ids"]) for s in shares)
    assert [s["client_ids"].shape[0] for s in shares] == [2, 2]


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"num_clients": 400}, "num_clients"),
        ({"clients_per_step": 7}, "clients_per_step"),
        ({"pool": "never"}, "pool"),
        ({"client_batch_size": 0}, "client_batch_size"),
        ({"sync_every": -1}, "sync_every"),
        ({"partition": "labels"}, "partition"),
        ({"name": "svhn"}, "synthetic"),
        ({"max_train_images": 4}, "max_train_images"),
        ({"partition": "dirichlet", "dirichlet_alpha": 0}, "dirichlet_alpha"),
        ({"partition": "shards", "classes_per_client": 0}, "classes_per_client"),
    ],
)
def test_datamodule_config_errors(kwargs, needle):
    with pytest.raises(ConfigError) as exc:
        _dm(**kwargs)
    assert needle in _one_line(exc)


def test_datamodule_cifar_offline_error_in_setup(tmp_path):
    dm = federated_datamodule(name="cifar10", root=str(tmp_path), download=False)
    with pytest.raises(ConfigError) as exc:
        dm.setup()
    assert "imagefolder" in _one_line(exc)


def test_datamodule_on_tiny_cifar(tmp_path):
    write_tiny_cifar10(tmp_path, per_batch=20)
    dm = federated_datamodule(
        name="cifar10",
        root=str(tmp_path),
        download=False,
        val_images=10,
        num_clients=3,
        clients_per_step=2,
        client_batch_size=2,
        num_workers=0,
    )
    dm.setup()
    assert dm.num_train_images == 90 and dm.num_classes == 10
    batch = dm.step_dataset()[0]
    assert batch["query"].shape == (2, 2, 3, 32, 32)


@pytest.mark.slow
@pytest.mark.long(seconds=45)
def test_real_cifar10_jpeg_imagefolder(cifar10_root, monkeypatch):
    """The real CIFAR-10 (JPEG re-encoding): 60,000 images, decoded once, then read from the
    cache (the session's other real-data tests share the copy, so either may come first)."""
    root = str(cifar10_root)
    train = load_image_set("imagefolder", root, "train")
    test = load_image_set("imagefolder", root, "test")
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.classes == CIFAR10_CLASSES == test.classes
    assert np.bincount(train.labels.numpy()).tolist() == [5000] * 10
    assert np.bincount(test.labels.numpy()).tolist() == [1000] * 10
    mean = (train.images.float().mean((0, 2, 3)) / 255).tolist()
    assert np.allclose(mean, MEAN, atol=0.01)
    # The cache holds what decoding gives, and a second load decodes nothing.
    decoded = image_folder_mod.load_image_folder(root, "test", use_cache=False)
    assert torch.equal(decoded.images, test.images) and torch.equal(decoded.labels, test.labels)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr("mocosfl.data.image_folder._decode_files", no_decoding)
    assert torch.equal(load_image_set("imagefolder", root, "train").images, train.images)
