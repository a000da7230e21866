"""The federated data module and its step stream (mocosfl.data.module, .stream)."""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pytest
import torch

from mocosfl.data import (
    DATASET_STATS,
    DataSettings,
    StepSampler,
    load_image_set,
    normalize,
)
from mocosfl.data import image_folder as image_folder_mod
from mocosfl.errors import ConfigError

from data_helpers import (
    CIFAR10_CLASSES,
    federated_datamodule,
    one_line,
    write_tiny_cifar10,
)

MEAN, STD = DATASET_STATS["cifar10"]


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


def test_eval_train_images_is_a_fixed_subset_of_the_training_split():
    dm = _dm(eval_train_images=50)
    loader = dm.eval_dataloader("train")
    subset = loader.dataset.indices
    assert len(loader.dataset) == 50 and np.all(np.diff(subset) > 0)
    assert np.isin(subset, dm.split_indices("train")).all()
    assert dm.num_train_images == 300 and dm.client_sizes.sum() == 300  # the clients keep all
    again = _dm(eval_train_images=50).eval_dataloader("train").dataset.indices
    assert np.array_equal(again, subset)
    assert len(dm.eval_dataloader("val").dataset) == 100  # val and test are never cut
    assert len(dm.eval_dataloader("test").dataset) == 50
    for every in (None, 300, 1000):
        assert len(_dm(eval_train_images=every).eval_dataloader("train").dataset) == 300
    with pytest.raises(ConfigError, match=r"data\.eval_train_images=0"):
        _dm(eval_train_images=0)


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
    assert needle in one_line(exc)


def test_data_settings_are_cast_and_checked_when_built():
    settings = DataSettings(name="CIFAR100", root="r", val_images="16", blur="PIL")
    assert (settings.name, settings.val_images, settings.blur) == ("cifar100", 16, "pil")
    assert settings.stats == "cifar100"  # None: the data set's own
    assert DataSettings(name="imagefolder", root="r").stats == "computed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.val_images = 5
    for key, value in [("val_images", -1), ("image_size", 4), ("dirichlet_alpha", -1.0)]:
        with pytest.raises(ConfigError) as exc:
            DataSettings(name="synthetic", root="", **{key: value})
        assert one_line(exc).startswith(f"data.{key}={value};")


def test_datamodule_cifar_offline_error_in_setup(tmp_path):
    dm = federated_datamodule(name="cifar10", root=str(tmp_path), download=False)
    with pytest.raises(ConfigError) as exc:
        dm.setup()
    assert "imagefolder" in one_line(exc)


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
