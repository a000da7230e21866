"""Client partitions (mocosfl.data.partition): exact covers, class skews, seeds, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mocosfl.data import (
    DATASET_STATS,
    label_counts,
    make_partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from mocosfl.errors import ConfigError

from data_helpers import (
    one_line,
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
        {"kind": "shards", "num_clients": 600, "classes_per_client": 2},
    ],
)
def test_make_partition_errors(kwargs):
    args = {"kind": "iid", "labels": _labels(), "num_clients": 5, "seed": 0, **kwargs}
    with pytest.raises(ConfigError) as exc:
        make_partition(**args)
    one_line(exc)


def test_label_counts():
    labels = np.array([0, 1, 1, 2, 2, 2])
    counts = label_counts(labels, [np.array([0, 1]), np.array([2, 3, 4, 5])], 4)
    assert counts.tolist() == [[1, 1, 0, 0], [0, 1, 3, 0]]
