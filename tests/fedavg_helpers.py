"""What the FedAvg tests of the FL-SSL methods share: one local step of some clients, then the
checks that only they moved and that FedAvg gave every client their data-weighted mean."""

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

Tensors = dict[str, torch.Tensor]


def step_some_clients(
    module: nn.Module, fit_one_step: Callable[[nn.Module, dict], None], ids: Sequence[int]
) -> tuple[Tensors, Tensors]:
    """One local step of clients ``ids`` on random float64 views [len(ids), 4, 3, 16, 16];
    returns the module's state before and after."""
    start = copy.deepcopy(module.state_dict())
    torch.manual_seed(2)
    query, key = (torch.randn(len(ids), 4, 3, 16, 16, dtype=torch.float64) for _ in range(2))
    fit_one_step(module, {"query": query, "key": key, "client_ids": torch.tensor(ids), "step": 0})
    return start, {k: v.clone() for k, v in module.state_dict().items()}


def assert_only_they_moved(start: Tensors, trained: Tensors, clients: int, ids: Sequence[int]):
    """The online or momentum weights of client ``c`` changed exactly when ``c`` is in ids."""
    for c in range(clients):
        mine = [k for k in trained if k.startswith((f"bank.online.{c}.", f"bank.momentum.{c}."))]
        assert any(not torch.equal(trained[k], start[k]) for k in mine) == (c in ids), c


def assert_weighted_mean(
    bank: nn.Module, kind: str, trained: Tensors, sizes: Sequence[float], ids: Sequence[int]
) -> None:
    """Every client's ``kind`` model (``online`` or ``momentum``) after FedAvg is the mean of
    clients ``ids``'s trained ones, weighted by their data ``sizes`` (1e-12, float64)."""
    total = sum(sizes[c] for c in ids)
    for name, value in getattr(bank, kind)[0].state_dict().items():
        if not value.is_floating_point():
            continue
        want = sum(sizes[c] * trained[f"bank.{kind}.{c}.{name}"] for c in ids) / total
        for c in range(bank.num_clients):
            got = getattr(bank, kind)[c].state_dict()[name]
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=f"{kind} {c} {name}")
