"""FL-SSL costs (``mocosfl.costs.flssl``): the whole network on each client, FedAvg of whole
models, no latents; the FL-MoCo protocol method and the FL-SSL column of `make overhead`."""

import json
import re
from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from torch import nn

import mocosfl.overhead as overhead_cli
from mocosfl.costs import CostModels, FLSSLModule, flssl_run_costs, measure_client
from mocosfl.flssl import FLMoCo
from mocosfl.models import ProjectionHead, build_split_model
from mocosfl.overhead import is_paper_flssl_client, overhead
from mocosfl.sfl.plan import FederatedPlan

from helpers import compose

IMAGE = (3, 16, 16)


def compose_overhead(tmp_path: Path, overrides: list[str]):
    cfg = compose("overhead", tmp_path / "overhead", overrides)
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")  # no CIFAR there
    return cfg


def flmoco(loss: str = "two_way") -> FLMoCo:
    torch.manual_seed(0)
    split = build_split_model("resnet18", cut_layer=2, width=8, image_size=16)
    sgd = partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    return FLMoCo(
        split, num_clients=2, client_optimizer=sgd, fedavg_weights="uniform", queue_size=8,
        head_hidden_dim=32, head_out_dim=16, loss=loss,
    )  # fmt: skip


def toy_models(sync_momentum: bool) -> CostModels:
    """An 'FL-SSL client' small enough to count by hand: Linear(48, 10) has 490 parameters."""
    online = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    momentum = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    exchanged = [online, momentum] if sync_momentum else [online]
    return CostModels(online=online, momentum=momentum, exchanged=exchanged, views=2)


@pytest.mark.parametrize(
    "clients_per_step, sync_momentum, syncs_per_client",
    # 25 steps in rounds of 5: 5 syncs; a pool of 2 of 4 clients takes part in half of them.
    [(4, True, 5), (4, False, 5), (2, True, 2.5)],
)
def test_weight_traffic_is_parameters_x_4_bytes_x_syncs(
    clients_per_step, sync_momentum, syncs_per_client
):
    plan = FederatedPlan(4, clients_per_step, client_batch_size=3, sync_every=5)
    costs = flssl_run_costs(
        toy_models(sync_momentum), (3, 4, 4), plan, steps_per_epoch=10, total_steps=25
    )
    models = 2 if sync_momentum else 1
    by_hand = 490 * models * 4 * syncs_per_client
    run = costs.whole_run
    assert run.model_up == run.model_down == by_hand
    assert run.model_sync == run.total == 2 * by_hand
    assert run.latents_up == run.gradients_down == run.cut_layer == 0
    assert costs.per_epoch.model_up == by_hand * 10 / 25  # 2 of the 5 syncs an epoch
    metrics = costs.metrics()
    assert metrics["cost/latent_numel"] == 0 and metrics["cost/latents_up_mb_per_client_run"] == 0
    assert metrics["cost/model_up_mb_per_client_run"] == by_hand / 2**20
    assert metrics["cost/client_params"] == 490


def test_flmoco_exchanges_its_whole_network_and_its_momentum_copy_on_request():
    module = flmoco()
    assert isinstance(module, FLSSLModule)
    whole = sum(
        p.numel()
        for part in (module.bank.online[0].client, module.bank.online[0].server)
        for p in part.parameters()
    )
    whole += sum(p.numel() for p in module.bank.online[0].head.parameters())
    with_momentum, without = module.cost_models(True), module.cost_models(False)
    assert [sum(p.numel() for p in m.parameters()) for m in with_momentum.exchanged] == [whole] * 2
    assert without.exchanged == [module.bank.online[0]]
    assert with_momentum.online is module.bank.online[0]
    assert with_momentum.momentum is module.bank.momentum[0]
    assert (with_momentum.views, flmoco("one_way").cost_models(True).views) == (2, 1)


def test_flops_of_the_whole_network_are_those_of_its_parts():
    """The online network measured whole = client + server + head measured one by one (its
    forward); its backward adds the input gradients of the inner parts."""
    module = flmoco()
    models = module.cost_models(sync_momentum=False)
    split = build_split_model("resnet18", cut_layer=2, width=8, image_size=16)
    client = measure_client(split.client, IMAGE)
    latent = tuple(split.client(torch.zeros(1, *IMAGE)).shape[1:])
    server = measure_client(split.server, latent)
    head = measure_client(ProjectionHead(split.feature_dim, 32, 16), (split.feature_dim,))
    parts = (client, server, head)

    plan = FederatedPlan(2, 2, client_batch_size=4, sync_every=5)
    costs = flssl_run_costs(models, IMAGE, plan, steps_per_epoch=10, total_steps=10)
    online = costs.online
    assert online.forward_flops == sum(c.forward_flops for c in parts)
    assert online.forward_backward_flops > sum(c.forward_backward_flops for c in parts)
    assert online.params == sum(c.params for c in parts)
    assert costs.momentum == online  # the momentum copy has the online network's structure
    # MocoSFL's convention: forward + backward for each view, a momentum forward for each view.
    assert costs.training_flops_per_image == 2 * (
        online.forward_backward_flops + online.forward_flops
    )
    per_image = 2 * (online.activation_bytes + online.latent_bytes)
    assert costs.training_activation_bytes_per_image == per_image
    assert costs.training_activation_bytes_per_batch == 4 * per_image
    assert costs.metrics()["cost/client_activation_mb_per_batch"] == 4 * per_image / 2**20


TINY_FLMOCO = [
    "module=flmoco",
    "data=synthetic",
    "data.image_size=16",
    "model.width=8",
    "module.head_hidden_dim=32",
    "module.head_out_dim=16",
    "sfl.num_clients=4",
    "sfl.clients_per_step=4",
    "sfl.client_batch_size=5",
    "sfl.sync_every=9",
    "trainer.max_epochs=10",
]


def test_overhead_prints_the_flssl_row(tmp_path, capsys):
    """2000 synthetic images, 200 held out, a server batch of 20: 90 steps an epoch, 900 steps in
    rounds of 9 = 100 syncs, each client in every one; the online network and its momentum copy
    go up and come back each sync."""
    record = overhead(compose_overhead(tmp_path, TINY_FLMOCO))
    printed = capsys.readouterr().out
    numel = record["costs"]["exchanged_numel"]
    online = record["costs"]["online"]["params"]
    assert numel == 2 * online
    assert re.search(rf"client parameters +{online:,} ", printed)
    weights = 2 * 100 * numel * 4 / 2**20  # up and down, 100 syncs, 4 B a value
    row = next(line for line in printed.splitlines() if "this config (measured" in line)
    assert row.split()[-3:] == [f"{weights:,.1f}", "0.000", f"{weights:,.1f}"]
    assert "FL-SSL (FLMoCo)" in printed and "the paper's Table 1 has FL-SSL for" in printed
    saved = json.loads((tmp_path / "overhead" / "overhead.json").read_text())
    assert saved == json.loads(json.dumps(record))
    metrics = saved["metrics"]
    assert metrics["cost/latents_up_mb_per_client_run"] == 0
    assert metrics["cost/model_up_mb_per_client_run"] == pytest.approx(weights / 2)
    assert saved["paper_table1_mb"] == {}


def test_overhead_of_the_papers_network_prints_the_papers_flssl_numbers(
    tmp_path, capsys, monkeypatch
):
    """The paper's FL-SSL row and client claims are printed for ResNet-18 of width 64 at 32 px
    (measured here on the tiny network, which is not that one)."""
    assert is_paper_flssl_client(compose_overhead(tmp_path, ["module=flmoco"]))
    assert not is_paper_flssl_client(compose_overhead(tmp_path, TINY_FLMOCO))
    monkeypatch.setattr(overhead_cli, "is_paper_flssl_client", lambda cfg: True)
    record = overhead(compose_overhead(tmp_path, TINY_FLMOCO))
    printed = capsys.readouterr().out
    assert re.search(r"paper: FL-SSL \(Zhuang 2022\) +8,269\.2 +0\.0 +8,269\.2 +1\.000x", printed)
    assert re.search(r"paper: ResNet-18, batch 128 +590\.6 +> 1,100", printed)
    assert record["paper_table1_mb"]["FL-SSL (Zhuang 2022)"]["total"] == 8269.2
    assert record["paper_flssl_client"]["mflops_per_image"] == 590.6
