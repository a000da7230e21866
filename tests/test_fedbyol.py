"""FedBYOL and FedEMA (``module=fedbyol|fedema``): one client is centralized BYOL, FedAvg averages
the online networks and leaves the targets alone, and FedEMA's blend follows its divergence."""

import copy
from collections import OrderedDict
from functools import partial

import pytest
import torch
from fedavg_helpers import assert_only_they_moved, assert_weighted_mean, step_some_clients
from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.flssl import FedBYOL
from mocosfl.flssl.fedbyol import BYOLNet, byol_loss
from mocosfl.flssl.fedema import FedEMAClientBank
from mocosfl.models import build_split_model

from helpers import fit_one_step

LR, MOMENTUM, WD, DECAY = 0.05, 0.9, 5e-4, 0.99


def make_module(loss: str = "two_way", num_clients: int = 1, **kwargs) -> FedBYOL:
    torch.manual_seed(0)
    split = build_split_model("resnet18", cut_layer=2, width=8, image_size=16)
    sgd = partial(torch.optim.SGD, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    settings = dict(fedavg_weights="uniform", head_hidden_dim=32, head_out_dim=16)
    settings.update(client_batch_size=6, predictor_hidden_dim=24)
    settings.update(kwargs)
    module = FedBYOL(
        split,
        num_clients=num_clients,
        client_optimizer=sgd,
        ema_decay=DECAY,
        loss=loss,
        client_schedule="constant",
        **settings,
    )
    return module.double()


def centralized_step(online: BYOLNet, target: nn.Module, x1, x2, loss: str) -> torch.Tensor:
    """BYOL on the whole network with one optimizer, written out by hand: the loss of each
    direction, summed, one SGD step, then the target's EMA."""
    pairs = [(x1, x2), (x2, x1)] if loss == "two_way" else [(x1, x2)]
    total = 0
    for a, b in pairs:
        p = nn.functional.normalize(online.predictor(online.encoder(a)), dim=1)
        with torch.no_grad():
            z = nn.functional.normalize(target(b), dim=1)
        total = total + (2 - 2 * (p * z).sum(1)).mean()
    opt = torch.optim.SGD(online.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    total.backward()
    opt.step()
    with torch.no_grad():
        for p, m in zip(online.encoder.parameters(), target.parameters()):
            m.mul_(DECAY).add_(p, alpha=1 - DECAY)
    return total.detach()


@pytest.mark.parametrize("loss", ["one_way", "two_way"])
def test_one_client_one_step_equals_centralized_byol(loss):
    torch.manual_seed(1)
    x1, x2 = (torch.randn(1, 6, 3, 16, 16, dtype=torch.float64) for _ in range(2))
    batch = {"query": x1, "key": x2, "client_ids": torch.tensor([0]), "step": 0}

    module = make_module(loss)
    reference = copy.deepcopy(module)
    trainer = fit_one_step(module, batch)
    want_loss = centralized_step(
        reference.bank.online[0], reference.bank.momentum[0], x1[0], x2[0], loss
    )

    assert trainer.global_step == 1
    got_loss = trainer.callback_metrics["train/loss"].item()
    assert got_loss == pytest.approx(want_loss.item(), abs=1e-9)
    got, want = module.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    assert not any(k.startswith("bank.momentum.0.predictor") for k in got)  # the target has none
    for name in want:
        if name.startswith(("bank.participated", "bank.steps")):
            continue
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-9, msg=name)


def test_byol_loss_is_two_minus_twice_the_cosine():
    p, z = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[6.0, 8.0], [0.0, 2.0]])
    torch.testing.assert_close(byol_loss(p, z), torch.tensor([0.0, 2.0]))


def test_fedavg_averages_online_networks_and_leaves_targets_and_idle_clients():
    sizes = [1.0, 2.0, 3.0, 4.0]
    module = make_module(num_clients=4, fedavg_weights="data", client_sizes=sizes)
    start, trained = step_some_clients(module, fit_one_step, [0, 2])
    assert_only_they_moved(start, trained, 4, [0, 2])

    bank = module.bank
    stats = bank.fedavg(sync_momentum=True)  # BYOL's targets stay local whatever it says
    assert stats["pool_size"] == 2
    assert_weighted_mean(bank, "online", trained, sizes, [0, 2])
    for name in bank.momentum[0].state_dict():
        for c in range(4):
            key = f"bank.momentum.{c}.{name}"
            assert torch.equal(bank.momentum[c].state_dict()[name], trained[key]), key

    # A client that never trained starts from the global model, target included (EasyFL).
    bank.receive([1])
    for name, value in bank.momentum[1].state_dict().items():
        assert torch.equal(value, bank.online[1].encoder.state_dict()[name]), name


def test_refuses_what_byol_cannot_train_in_one_line():
    with pytest.raises(ConfigError, match=r"client_batch_size=1.*BatchNorm"):
        make_module(client_batch_size=1)
    with pytest.raises(ConfigError, match="legacy_sum"):
        make_module("legacy_sum")


def tiny_byol() -> BYOLNet:
    """Two conv layers (FedEMA's divergence is over conv weights) and a linear predictor."""
    torch.manual_seed(3)
    encoder = nn.Sequential(
        OrderedDict(
            client=nn.Conv2d(1, 2, 3),
            server=nn.Sequential(nn.Conv2d(2, 2, 1), nn.Flatten()),
            head=nn.Identity(),
        )
    )
    return BYOLNet(encoder, nn.Linear(2, 2)).double()


def convs(model: BYOLNet) -> list[torch.Tensor]:
    return [model.encoder.client.weight, model.encoder.server[0].weight]


@torch.no_grad()
def local_training(bank: FedEMAClientBank, client: int, shifts: list[float]) -> None:
    """Stands in for a round of training: moves each conv layer of ``client`` by ``shift`` (an
    L2 distance) and its predictor by one, as its optimizer would have."""
    for weight, shift in zip(convs(bank.online[client]), shifts):
        weight.add_(shift / weight.numel() ** 0.5)  # a constant step of L2 norm `shift`
    bank.online[client].predictor.weight.add_(1.0)
    bank._count_steps([client])


def test_fedema_blends_by_the_divergence_as_computed_by_hand():
    sgd = partial(torch.optim.SGD, lr=0.1)
    bank = FedEMAClientBank(tiny_byol(), 2, sgd, scaler_target=0.7).double()
    bank.receive([0, 1])  # round 1: neither trained, both take the global model
    local_training(bank, 0, [0.3, 0.5])  # client 0's divergence: (0.3 + 0.5) / 2 = 0.4
    local_training(bank, 1, [0.1, 0.1])  # client 1's: 0.1
    own = [copy.deepcopy(bank.online[c].state_dict()) for c in range(2)]
    bank.fedavg()
    global_state = {k: (own[0][k] + own[1][k]) / 2 for k in own[0]}
    assert bank.local_divergence.tolist() == pytest.approx([0.4, 0.1])
    for c in range(2):  # FedEMA keeps the global model until a client's next round
        for k, v in bank.online[c].state_dict().items():
            assert torch.equal(v, own[c][k]), k

    # Round 2: the auto scaler is set at the first blend, 0.7 / divergence, so mu = 0.7.
    bank.receive([0])
    assert float(bank.scaler[0]) == pytest.approx(0.7 / 0.4)
    for name, p in bank.online[0].named_parameters():
        want = 0.7 * own[0][name] + 0.3 * global_state[name]
        torch.testing.assert_close(p, want, rtol=0, atol=1e-12, msg=name)
    assert float(bank.scaler[1]) == 0  # client 1 did not start a round yet

    # Its next divergence, 0.2, gives mu = (0.7 / 0.4) * 0.2 = 0.35; a larger one is cut at 1.
    for shifts, mu in (([0.2, 0.2], 0.35), ([1.0, 1.0], 1.0)):
        local_training(bank, 0, shifts)
        before = copy.deepcopy(bank.online[0].state_dict())
        bank.fedavg()  # only client 0 trained: the global model is its own
        bank.receive([0])
        for name, p in bank.online[0].named_parameters():
            want = mu * before[name] + (1 - mu) * bank.global_model.state_dict()[name]
            torch.testing.assert_close(p, want, rtol=0, atol=1e-12, msg=f"{mu} {name}")


def test_fedema_constant_scaler_and_evaluation_model():
    sgd = partial(torch.optim.SGD, lr=0.1)
    bank = FedEMAClientBank(tiny_byol(), 2, sgd, weight_scaler=2.0).double()
    bank.receive([0, 1])
    local_training(bank, 0, [0.1, 0.1])
    local_training(bank, 1, [0.1, 0.1])
    bank.fedavg()
    # Evaluation reads the global model between rounds, not client 0's own.
    averaged = bank.averaged_client().state_dict()
    for k, v in bank.global_model.state_dict().items():
        assert torch.equal(averaged[k], v), k
    own = copy.deepcopy(bank.online[0].state_dict())
    bank.receive([0])  # mu = 2.0 * 0.1
    for name, p in bank.online[0].named_parameters():
        want = 0.2 * own[name] + 0.8 * bank.global_model.state_dict()[name]
        torch.testing.assert_close(p, want, rtol=0, atol=1e-12, msg=name)


def test_costs_count_the_online_network_crossing_and_the_target_staying():
    module = make_module()
    models = module.cost_models(sync_momentum=True)  # MoCo's setting: BYOL's targets stay
    assert models.exchanged == [module.bank.online[0]]
    assert models.momentum is module.bank.momentum[0] and models.views == 2
