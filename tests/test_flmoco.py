"""FL-MoCo (``module=flmoco``): one client is centralized MoCo and FedAvg is the data-weighted
mean (the runs of every FL-SSL method: tests/test_flssl.py)."""

import copy
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from fedavg_helpers import assert_only_they_moved, assert_weighted_mean, step_some_clients
from lightning.pytorch.strategies import DDPStrategy

from mocosfl.errors import ConfigError
from mocosfl.flssl import FLMoCo
from mocosfl.models import build_split_model
from mocosfl.sfl import info_nce
from mocosfl.sfl.ddp import FederatedDDPStrategy, nothing_to_reduce

from helpers import fit_one_step

LR, MOMENTUM, WD, T, DECAY = 0.05, 0.9, 5e-4, 0.1, 0.99


def make_module(loss: str = "two_way", num_clients: int = 1, **kwargs) -> FLMoCo:
    torch.manual_seed(0)
    split = build_split_model("resnet18", cut_layer=2, width=8, image_size=16)
    sgd = partial(torch.optim.SGD, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    settings = dict(fedavg_weights="uniform", queue_size=32, head_hidden_dim=32, head_out_dim=16)
    settings.update(kwargs)
    module = FLMoCo(
        split,
        num_clients=num_clients,
        client_optimizer=sgd,
        temperature=T,
        ema_decay=DECAY,
        loss=loss,
        client_schedule="constant",
        **settings,
    )
    return module.double()


def centralized_step(online, ema, negatives, xq, xk, loss: str):
    """MoCo v2 on the whole network with one optimizer, written out by hand; returns the loss
    and the keys the step enqueues."""
    with torch.no_grad():
        for p, m in zip(online.parameters(), ema.parameters()):
            m.mul_(DECAY).add_(p, alpha=1 - DECAY)
    pairs = [(xq, xk), (xk, xq)] if loss == "two_way" else [(xq, xk)]
    losses, keys = [], []
    for a, b in pairs:
        q = F.normalize(online(a), dim=1)
        with torch.no_grad():
            keys.append(F.normalize(ema(b), dim=1))
        losses.append(info_nce(q, keys[-1], negatives, T)[0])
    total = sum(losses) / len(losses)
    opt = torch.optim.SGD(online.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    total.backward()
    opt.step()
    return total.detach(), torch.cat(keys)


@pytest.mark.parametrize("loss", ["one_way", "two_way"])
def test_one_client_one_step_equals_centralized_moco(loss):
    torch.manual_seed(1)
    xq, xk = (torch.randn(1, 6, 3, 16, 16, dtype=torch.float64) for _ in range(2))
    batch = {"query": xq, "key": xk, "client_ids": torch.tensor([0]), "step": 0}

    module = make_module(loss)
    reference = copy.deepcopy(module)
    trainer = fit_one_step(module, batch)
    negatives = reference.queues.keys[0].clone()
    want_loss, want_keys = centralized_step(
        reference.bank.online[0], reference.bank.momentum[0], negatives, xq[0], xk[0], loss
    )

    assert trainer.global_step == 1  # one step of the pool, not one per client optimizer
    got_loss = trainer.callback_metrics["train/loss"].item()
    assert got_loss == pytest.approx(want_loss.item(), abs=1e-9)
    got, want = module.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for name in want:
        if name.startswith(("queues.", "bank.participated", "bank.steps")):
            continue
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-9, msg=name)
    n = want_keys.shape[0]
    torch.testing.assert_close(module.queues.keys[0, :n], want_keys, rtol=0, atol=1e-9)
    torch.testing.assert_close(module.queues.keys[0, n:], negatives[n:], rtol=0, atol=0)
    assert module.queues.ptr.tolist() == [n]


def test_fedavg_is_the_data_weighted_mean_and_idle_clients_do_not_train():
    sizes = [1.0, 2.0, 3.0, 4.0]
    module = make_module(num_clients=4, fedavg_weights="data", client_sizes=sizes)
    # The momentum copies move only from the second step on (online == momentum at the first).
    start, trained = step_some_clients(module, fit_one_step, [0, 2])
    assert_only_they_moved(start, trained, 4, [0, 2])
    bank = module.bank
    assert module.queues.ptr.tolist() == [8, 0, 8, 0]  # two views of 4 images, own queue only
    assert torch.equal(module.queues.keys[[1, 3]], start["queues.keys"][[1, 3]])
    assert [bool(bank.optimizers[c].state) for c in range(4)] == [True, False, True, False]

    stats = bank.fedavg(sync_momentum=True)
    assert stats["pool_size"] == 2
    for kind in ("online", "momentum"):
        assert_weighted_mean(bank, kind, trained, sizes, [0, 2])
    assert not bank.participated.any()
    # Queues are each client's own: FedAvg leaves them alone.
    assert torch.equal(module.queues.keys, trained["queues.keys"])


def test_refuses_the_split_only_settings_in_one_line():
    with pytest.raises(ConfigError, match="legacy_sum"):
        make_module("legacy_sum")
    with pytest.raises(ConfigError, match="client_engine"):
        make_module(client_engine="vmap")


def test_several_processes_take_the_strategy_that_leaves_it_unwrapped():
    """Every tensor is a client's, exchanged by the module (tests/test_ddp.py runs two processes):
    Lightning's own DDP, which would wrap it, is refused in one line."""
    module = make_module()
    module._trainer = SimpleNamespace(world_size=2, strategy=DDPStrategy(), datamodule=None)
    with pytest.raises(ConfigError, match="FederatedDDPStrategy"):
        module.setup("fit")
    module._trainer.strategy = FederatedDDPStrategy()
    module.setup("fit")
    assert nothing_to_reduce(module)
