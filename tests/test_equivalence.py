"""One client holding the whole batch is exactly a centralized MoCo step on the unsplit network."""

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from mocosfl.models import build_split_model
from mocosfl.sfl import MocoSFL, info_nce

from helpers import fit_one_step

LR, MOMENTUM, WD, T, DECAY = 0.05, 0.9, 5e-4, 0.1, 0.99


def make_module(loss: str) -> MocoSFL:
    torch.manual_seed(0)
    split = build_split_model("resnet18", cut_layer=2, width=8, image_size=16)
    sgd = partial(torch.optim.SGD, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    return MocoSFL(
        split,
        num_clients=1,
        server_optimizer=sgd,
        client_optimizer=sgd,
        fedavg_weights="uniform",
        queue_size=32,
        temperature=T,
        ema_decay=DECAY,
        loss=loss,
        head_hidden_dim=32,
        head_out_dim=16,
    )


def centralized_step(module: MocoSFL, xq: torch.Tensor, xk: torch.Tensor, loss: str):
    """MoCo v2 on the unsplit network with one optimizer, written out by hand."""
    online = torch.nn.Sequential(module.bank.online[0], module.server, module.head)
    ema = torch.nn.Sequential(module.bank.momentum[0], module.server_momentum, module.head_momentum)
    with torch.no_grad():
        for p, m in zip(online.parameters(), ema.parameters()):
            m.mul_(DECAY).add_(p, alpha=1 - DECAY)
    pairs = [(xq, xk), (xk, xq)] if loss == "two_way" else [(xq, xk)]
    losses = []
    for a, b in pairs:
        q = F.normalize(online(a), dim=1)
        with torch.no_grad():
            k = F.normalize(ema(b), dim=1)
        losses.append(info_nce(q, k, module.queue.keys, T)[0])
    loss = sum(losses) / len(losses)
    opt = torch.optim.SGD(online.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    loss.backward()
    opt.step()
    return loss.detach()


@pytest.mark.parametrize("loss", ["one_way", "two_way"])
def test_one_client_equals_centralized_moco(loss):
    torch.manual_seed(1)
    xq, xk = torch.randn(1, 6, 3, 16, 16), torch.randn(1, 6, 3, 16, 16)
    batch = {"query": xq, "key": xk, "client_ids": torch.tensor([0]), "step": 0}

    split_module = make_module(loss)
    reference = copy.deepcopy(split_module)
    trainer = fit_one_step(split_module, batch)
    expected_loss = centralized_step(reference, xq[0], xk[0], loss)

    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(
        expected_loss.item(), abs=1e-6
    )
    got, want = split_module.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for name in want:
        if name.startswith(("queue.", "bank.participated", "bank.steps")):
            continue
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)
    assert trainer.global_step == 1  # client optimizers do not count as steps
