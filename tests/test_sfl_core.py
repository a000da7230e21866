"""The method's small pieces: InfoNCE, the queue, momentum updates, FedAvg."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mocosfl.sfl import NegativeQueue, info_nce, make_client_bank, update_momentum


def test_info_nce_matches_hand_computation():
    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    queue = F.normalize(torch.randn(6, 8), dim=1)
    loss, logits = info_nce(q, k, queue, temperature=0.2)
    expected = 0.0
    for i in range(4):
        pos = math.exp(float(q[i] @ k[i]) / 0.2)
        neg = sum(math.exp(float(q[i] @ queue[j]) / 0.2) for j in range(6))
        expected += -math.log(pos / (pos + neg))
    assert loss.item() == pytest.approx(expected / 4, rel=1e-5)
    assert logits.shape == (4, 7)


def test_info_nce_matches_lightly_and_queue_matches_its_bank():
    lightly_loss = pytest.importorskip("lightly.loss")
    torch.manual_seed(1)
    q = F.normalize(torch.randn(5, 16), dim=1).requires_grad_(True)
    k = F.normalize(torch.randn(5, 16), dim=1)
    queue = NegativeQueue(size=20, dim=16)
    oracle = lightly_loss.NTXentLoss(temperature=0.1, memory_bank_size=(20, 16))
    oracle.memory_bank.bank = queue.keys.clone()
    oracle.memory_bank.bank_ptr.zero_()
    expected = oracle(q, k)
    loss, _ = info_nce(q, k, queue.keys, 0.1)
    queue.enqueue(k)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(queue.keys, oracle.memory_bank.bank, atol=1e-7)


def test_queue_is_a_fifo_ring_that_wraps_around():
    queue = NegativeQueue(size=5, dim=2)
    rows = [torch.full((1, 2), float(i)) for i in range(8)]
    queue.enqueue(torch.cat(rows[:3]))
    assert queue.ptr.item() == 3
    queue.enqueue(torch.cat(rows[3:7]))  # 2 rows fill the end, 2 wrap to the front
    assert queue.keys[:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert queue.ptr.item() == 2
    assert "keys" in queue.state_dict() and "ptr" in queue.state_dict()


def test_update_momentum_is_an_ema():
    online, ema = [torch.ones(3)], [torch.zeros(3)]
    update_momentum(online, ema, decay=0.9)
    assert torch.allclose(ema[0], torch.full((3,), 0.1))


ENGINES = ("loop", "vmap")


def make_bank(engine, num_clients=3, weights=None):
    sgd = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
    return make_client_bank(engine, nn.Linear(2, 1, bias=False), num_clients, sgd, 0.5, weights)


def set_weight(bank, kind: str, client: int, value: float) -> None:
    bank.set_states(kind, [client], {"weight": torch.full((1, 1, 2), value)})


def weight(bank, kind: str, client: int) -> torch.Tensor:
    return bank.states(kind, [client])["weight"][0]


@pytest.mark.parametrize("engine", ENGINES)
def test_fedavg_weights_by_data_size_and_loads_every_client(engine):
    bank = make_bank(engine, weights=[1.0, 3.0, 100.0])
    for client, value in enumerate((1.0, 5.0, -7.0)):
        set_weight(bank, "online", client, value)
    bank.participated[:2] = True  # client 2 sat this round out
    stats = bank.fedavg(sync_momentum=False)
    expected = (1 * 1.0 + 3 * 5.0) / 4
    for client in range(3):
        assert torch.allclose(weight(bank, "online", client), torch.full((1, 2), expected))
    # distances sqrt(2) * |1 - 4| and sqrt(2) * |5 - 4|, averaged
    assert stats["divergence"] == pytest.approx(math.sqrt(2) * 2)
    assert not bank.participated.any()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("sync", [True, False])
def test_fedavg_momentum_sync_is_optional(engine, sync):
    bank = make_bank(engine)
    set_weight(bank, "momentum", 0, 2.0)
    set_weight(bank, "momentum", 1, 4.0)
    bank.participated[:2] = True
    before = weight(bank, "momentum", 2).clone()
    bank.fedavg(sync_momentum=sync)
    if sync:
        for client in range(3):
            assert torch.allclose(weight(bank, "momentum", client), torch.full((1, 2), 3.0))
    else:
        assert torch.equal(weight(bank, "momentum", 2), before)
        assert torch.allclose(weight(bank, "momentum", 0), torch.full((1, 2), 2.0))


@pytest.mark.parametrize("engine", ENGINES)
def test_bank_steps_only_the_pool(engine):
    bank = make_bank(engine)
    before = [weight(bank, "online", c).clone() for c in range(3)]
    latents = bank.encode([0, 2], torch.ones(2, 1, 2))
    latents.sum().backward()
    bank.step([0, 2], lambda c: 0.1)
    assert not torch.equal(weight(bank, "online", 0), before[0])
    assert torch.equal(weight(bank, "online", 1), before[1])
    assert bank.steps.tolist() == [1, 0, 1]
    assert bank.pool_since_sync() == [0, 2]
