"""Split training items among clients: pure functions of the labels and a seed.

Every function returns one int64 index array per client (indices into ``labels`` / ``range(n)``);
together they hold every index exactly once. The data settings are checked where they are read
(:class:`~mocosfl.data.settings.DataSettings`); what depends on the data, the number of clients
the items can serve, is checked here.

* ``iid``: a seeded permutation cut into near-equal contiguous chunks (docs/paper.md, "Data").
* ``shards`` (the original's non-IID split, docs/paper.md, "Data"): items are sorted by label,
  with a seeded shuffle within each label, and cut into ``num_clients * classes_per_client``
  shards of near-equal size; each client draws ``classes_per_client`` shards without replacement,
  so it holds at most that many classes (it may draw two shards of the same class, as in the
  original).
  Shards never straddle two classes: each class is cut into its own whole number of shards,
  allotted to the classes in proportion to their size (D'Hondt, so shard sizes stay as equal as
  the class sizes allow). When there are fewer shards than classes this is impossible, and the
  label-sorted order is cut into equal contiguous shards instead (a shard may then hold two
  classes).
* ``dirichlet``: per class, proportions ~ Dir(alpha) over clients (not in the original). Clients
  left with fewer than ``min_per_client`` items are topped up deterministically by moving items
  from the currently largest client.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ConfigError

__all__ = [
    "PARTITION_KINDS",
    "label_counts",
    "make_partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
]

PARTITION_KINDS = ("iid", "shards", "dirichlet")
_DIRICHLET_TRIES = 10


def _check_clients(num_items: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ConfigError(f"sfl.num_clients={num_clients}; use at least 1")
    if num_clients > num_items:
        raise ConfigError(
            f"{num_clients} clients but only {num_items} training images; lower sfl.num_clients "
            "(or raise data.max_train_images / lower data.val_images)"
        )


def partition_iid(num_items: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """A seeded random permutation of ``range(num_items)`` cut into near-equal chunks."""
    _check_clients(int(num_items), int(num_clients))
    perm = np.random.default_rng(seed).permutation(int(num_items)).astype(np.int64)
    return [np.ascontiguousarray(p) for p in np.array_split(perm, int(num_clients))]


def _label_sorted(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices sorted by label, in a seeded random order within each label."""
    shuffled = rng.permutation(labels.shape[0])
    return shuffled[np.argsort(labels[shuffled], kind="stable")].astype(np.int64)


def _dhondt(sizes: np.ndarray, seats: int) -> np.ndarray:
    """Whole number of shards per class: at least one each, then one at a time to the class whose
    shards are currently largest. Requires len(sizes) <= seats <= sizes.sum(), all sizes >= 1."""
    alloc = np.ones(sizes.shape[0], dtype=np.int64)
    for _ in range(seats - sizes.shape[0]):
        alloc[int(np.argmax(sizes / alloc))] += 1  # argmax: ties go to the lowest class
    return alloc


def partition_shards(
    labels: np.ndarray, num_clients: int, classes_per_client: int, seed: int
) -> list[np.ndarray]:
    """Shard split: each client gets ``classes_per_client`` (at least 1) single-class shards."""
    labels = np.asarray(labels)
    n, num_clients, cpc = labels.shape[0], int(num_clients), int(classes_per_client)
    _check_clients(n, num_clients)
    num_shards = num_clients * cpc
    if num_shards > n:
        raise ConfigError(
            f"{num_clients} clients x {cpc} classes per client = {num_shards} shards, more than "
            f"the {n} training images; lower sfl.num_clients or data.classes_per_client"
        )
    rng = np.random.default_rng(seed)
    order = _label_sorted(labels, rng)
    classes, sizes = np.unique(labels, return_counts=True)
    if num_shards >= classes.shape[0]:
        per_class = _dhondt(sizes, num_shards)
        shards: list[np.ndarray] = []
        start = 0
        for size, k in zip(sizes, per_class):
            shards.extend(np.array_split(order[start : start + size], int(k)))
            start += size
    else:
        warnings.warn(
            f"{num_shards} shards for {classes.shape[0]} classes: some shards hold two classes, "
            "so clients may have more than classes_per_client classes",
            stacklevel=2,
        )
        shards = list(np.array_split(order, num_shards))
    draw = rng.permutation(num_shards)
    return [
        np.concatenate([shards[s] for s in draw[i * cpc : (i + 1) * cpc]]).astype(np.int64)
        for i in range(num_clients)
    ]


def _top_up(parts: list[np.ndarray], min_per_client: int) -> list[np.ndarray]:
    """Move items from the largest client to each client below ``min_per_client``."""
    parts = [p.copy() for p in parts]
    sizes = np.array([p.shape[0] for p in parts])
    for c in range(len(parts)):
        while sizes[c] < min_per_client:
            donor = int(np.argmax(sizes))  # largest; ties go to the lowest client id
            take = min(min_per_client - sizes[c], sizes[donor] - min_per_client)
            moved = parts[donor][sizes[donor] - take :]
            parts[donor] = parts[donor][: sizes[donor] - take]
            parts[c] = np.concatenate([parts[c], moved])
            sizes[donor] -= take
            sizes[c] += take
    return parts


def partition_dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int,
    min_per_client: int = 1,
) -> list[np.ndarray]:
    """Per class, split its items among clients with proportions ~ Dir(alpha), alpha > 0.

    Up to 10 draws are tried for one in which every client has ``min_per_client`` items; if none
    is, the last draw is topped up by moving items from the largest clients.
    """
    labels = np.asarray(labels)
    n, num_clients = labels.shape[0], int(num_clients)
    _check_clients(n, num_clients)
    if min_per_client < 0 or min_per_client * num_clients > n:
        raise ConfigError(
            f"cannot give each of {num_clients} clients {min_per_client} of {n} images; "
            "lower sfl.num_clients"
        )
    rng = np.random.default_rng(seed)
    order = _label_sorted(labels, rng)
    _, sizes = np.unique(labels, return_counts=True)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    parts: list[np.ndarray] = []
    for _ in range(_DIRICHLET_TRIES):
        pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for k in range(sizes.shape[0]):
            items = order[bounds[k] : bounds[k + 1]]
            p = rng.dirichlet(np.full(num_clients, float(alpha)))
            if not np.all(np.isfinite(p)):  # underflow for tiny alpha: one client takes all
                p = np.zeros(num_clients)
                p[int(rng.integers(num_clients))] = 1.0
            cuts = np.round(np.cumsum(p)[:-1] * items.shape[0]).astype(np.int64)
            cuts = np.clip(cuts, 0, items.shape[0])
            for c, piece in enumerate(np.split(items, cuts)):
                pieces[c].append(piece)
        parts = [np.concatenate(ps).astype(np.int64) for ps in pieces]
        if min(p.shape[0] for p in parts) >= min_per_client:
            return parts
    return _top_up(parts, min_per_client)


def make_partition(
    kind: str,
    labels: np.ndarray,
    num_clients: int,
    seed: int,
    classes_per_client: int = 2,
    dirichlet_alpha: float = 0.5,
) -> list[np.ndarray]:
    """Dispatch on ``kind`` in iid | shards | dirichlet."""
    labels = np.asarray(labels)
    if kind == "iid":
        return partition_iid(labels.shape[0], num_clients, seed)
    if kind == "shards":
        return partition_shards(labels, num_clients, classes_per_client, seed)
    if kind == "dirichlet":
        return partition_dirichlet(labels, num_clients, dirichlet_alpha, seed)
    raise ConfigError(f"unknown data.partition={kind!r}; use one of {', '.join(PARTITION_KINDS)}")


def label_counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """``[num_clients, num_classes]`` int64 counts of each label in each client's part."""
    labels = np.asarray(labels)
    out = np.zeros((len(parts), int(num_classes)), dtype=np.int64)
    for c, p in enumerate(parts):
        out[c] = np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=int(num_classes))
    return out
