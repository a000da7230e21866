"""The original's client-pool schedule, enqueue order and legacy schedules (docs/differences.md,
rows "client pools", "enqueue order", "legacy schedules").

The original draws a pool once per code epoch (one pass over client 0's data) and runs FedAvg
after every ``num_batch // avg_freq``-th step of the epoch and after its last; ``sfl.pool=epoch``
must give the same structure (which steps share a pool, where FedAvg runs), the batch of a step
must stay a function of the seed and the step (exact resume), and the legacy schedules must take
their lengths from the run.
"""

import copy
import dataclasses
import itertools
import math
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import open_dict

from mocosfl.callbacks import FedAvgCallback
from mocosfl.data import FederatedDataModule, FederatedStepDataset
from mocosfl.errors import ConfigError
from mocosfl.models import build_split_model
from mocosfl.sfl import MocoSFL
from mocosfl.sfl.plan import FederatedPlan, steps_per_pass
from mocosfl.sfl.schedules import legacy_client_period
from mocosfl.train import train

from data_helpers import federated_datamodule
from helpers import TINY, fit_one_step, flat_state

# The paper's settings on CIFAR's 50,000 images (--auto_adjust, and the Table 2 scripts' own
# values for 20 clients), per number of clients: pool, images per client and step, FedAvg
# interval num_batch // avg_freq; then the original's code epoch and its client cosine's T_max.
PAPER = {
    5: (5, 20, 50, 500, 200),
    20: (5, 20, 12, 125, 800),
    100: (100, 1, 50, 500, 200),
    200: (100, 1, 50, 250, 400),
    1000: (100, 1, 50, 50, 2000),
}
CIFAR_TRAIN = 50_000


def original_loop(num_batch: int, interval: int, steps: int) -> tuple[list[int], list[int]]:
    """The structure of the original's training loop over ``steps`` steps:
    for each code epoch a pool is drawn once, then ``num_batch`` steps run on it, and FedAvg
    follows a step whose place in the epoch is the last one or ``interval - 1`` modulo
    ``interval``. Returns (the epoch whose pool each step uses, the steps FedAvg follows)."""
    pool_of_step, fedavg_after = [], []
    for epoch in range(math.ceil(steps / num_batch)):
        for place in range(num_batch):
            t = epoch * num_batch + place
            if t == steps:
                break
            pool_of_step.append(epoch)
            if place == num_batch - 1 or place % interval == interval - 1:
                fedavg_after.append(t)
    return pool_of_step, fedavg_after


def runs(pools: list[tuple[int, ...]]) -> list[int]:
    """Lengths of the runs of consecutive equal pools."""
    lengths = [1]
    for previous, current in itertools.pairwise(pools):
        if current == previous:
            lengths[-1] += 1
        else:
            lengths.append(1)
    return lengths


def step_dataset(num_clients: int, pool_size: int, batch: int, interval: int, mode: str):
    """The data of the original's setting: ``CIFAR_TRAIN // num_clients`` image indices a client
    (no pixels are read: only pools and stream positions are asked for)."""
    size = CIFAR_TRAIN // num_clients
    parts = [np.arange(c * size, (c + 1) * size) for c in range(num_clients)]
    plan = FederatedPlan(num_clients, pool_size, batch, interval, mode, seed=3)
    return FederatedStepDataset(torch.empty(0), parts, plan, seed=3, augmentation=None)


@pytest.mark.parametrize("num_clients", [20, 200, 1000])
def test_epoch_pools_and_fedavg_follow_the_original_loop(num_clients):
    pool_size, batch, interval, num_batch, _ = PAPER[num_clients]
    steps = 2 * num_batch + num_batch // 2  # the run may end inside a code epoch
    ds = step_dataset(num_clients, pool_size, batch, interval, "epoch")
    assert ds.plan.code_epoch_steps == num_batch
    epoch_of_step, fedavg_after = original_loop(num_batch, interval, steps)

    pools = [tuple(ds.plan.pool_for_step(t)) for t in range(steps)]
    # The drawn ids differ from the original's (another generator): steps share a pool exactly
    # when they share a code epoch, each epoch draws a new one.
    assert runs(pools) == runs(epoch_of_step)
    assert [ds.plan.pool_index(t) for t in range(steps)] == epoch_of_step
    assert [t for t in range(steps) if ds.plan.ends_round(t)] == fedavg_after
    # no round spans two pools: every pool change is preceded by a FedAvg
    assert all(ds.plan.ends_round(t) for t in range(steps - 1) if pools[t] != pools[t + 1])


@pytest.mark.parametrize("num_clients, pools_by_round", [(20, 11), (200, 5), (1000, 1)])
def test_one_pool_per_code_epoch_where_rounds_drew_several(num_clients, pools_by_round):
    """The audit's count over one code epoch: ``sfl.pool=round`` drew a pool per round."""
    pool_size, batch, interval, num_batch, _ = PAPER[num_clients]
    distinct = {}
    for mode in ("round", "epoch"):
        ds = step_dataset(num_clients, pool_size, batch, interval, mode)
        distinct[mode] = len({tuple(ds.plan.pool_for_step(t)) for t in range(num_batch)})
    assert distinct == {"round": pools_by_round, "epoch": 1}


def test_epoch_rounds_when_the_epoch_is_not_a_multiple_of_sync_every():
    plan = FederatedPlan(20, 5, 20, sync_every=12, pool="epoch", code_epoch_steps=125)
    ends = [t for t in range(250) if plan.ends_round(t)]
    assert ends[:11] == [11, 23, 35, 47, 59, 71, 83, 95, 107, 119, 124]  # 10 x 12, then 5
    assert ends[11:13] == [136, 148]  # the next epoch counts from its own first step
    short = FederatedPlan(sync_every=50, pool="epoch", code_epoch_steps=4)
    assert [t for t in range(10) if short.ends_round(t)] == [3, 7]
    never = dataclasses.replace(short, sync_every=0)
    assert not any(never.ends_round(t) for t in range(10))
    # the costs count the same FedAvg events: 2 epochs of 11 and 6 of the third
    assert plan.syncs_in_run(320) == sum(plan.ends_round(t) for t in range(320)) + 1
    assert plan.clients_per_sync() == 5.0


def test_epoch_stream_positions_count_the_steps_each_client_played():
    """Every pool member reads ``b`` images a step, from where its earlier steps left off."""
    ds = step_dataset(20, 5, 20, 12, "epoch")
    played = np.zeros(20, dtype=np.int64)
    expected = {}
    for t in range(600):
        pool = ds.plan.pool_for_step(t)
        expected[t] = (pool, played[pool] * 20)
        played[pool] += 1
    for t in [0, 124, 125, 599, 300, 3, 300]:  # forward, backward, repeated
        pool, positions = ds.stream_positions(t)
        assert np.array_equal(pool, expected[t][0])
        assert np.array_equal(positions, expected[t][1])


def small_datamodule(**kw) -> FederatedDataModule:
    """Synthetic data for 6 clients, 2 a step, code epochs as pools; ``kw`` changes settings."""
    args = dict(
        name="synthetic",
        root="",
        image_size=8,
        val_images=20,
        num_clients=6,
        clients_per_step=2,
        client_batch_size=4,
        sync_every=2,
        pool="epoch",
        num_workers=0,
        synthetic={"train_size": 200, "test_size": 10, "seed": 0},
        seed=5,
    )
    dm = federated_datamodule(**{**args, **kw})
    dm.setup()
    return dm


def test_code_epoch_is_one_pass_over_client_0_and_can_be_set():
    dm = small_datamodule(partition="dirichlet", dirichlet_alpha=0.3)
    sizes = dm.client_sizes
    assert len(set(sizes.tolist())) > 1  # unequal sizes: client 0's pass decides
    assert dm.plan.code_epoch_steps == math.ceil(sizes[0] / 4)
    assert dm.step_dataset().plan == dm.plan
    fixed = small_datamodule(code_epoch_steps=7)
    assert fixed.plan.code_epoch_steps == 7 and fixed.step_dataset().plan == fixed.plan
    with pytest.raises(ConfigError, match=r"sfl\.code_epoch_steps=0"):
        FederatedPlan(code_epoch_steps=0)


@pytest.mark.parametrize("num_clients", sorted(PAPER))
def test_legacy_lengths_derived_from_the_run(num_clients):
    pool_size, batch, _, num_batch, t_max = PAPER[num_clients]
    assert steps_per_pass(CIFAR_TRAIN // num_clients, batch) == num_batch
    assert legacy_client_period(num_clients, pool_size) == t_max


def test_a_short_last_batch_still_counts_a_step():
    assert steps_per_pass(2250, 20) == 113 and steps_per_pass(2240, 20) == 112


def tiny_module(loss: str = "legacy_sum", **kw) -> MocoSFL:
    torch.manual_seed(0)
    split = build_split_model("resnet18", cut_layer=1, width=8, image_size=16)
    sgd = partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    args = dict(
        num_clients=1,
        server_optimizer=sgd,
        client_optimizer=sgd,
        fedavg_weights="uniform",
        queue_size=32,
        loss=loss,
        head_hidden_dim=32,
        head_out_dim=16,
    )
    return MocoSFL(split, **{**args, **kw})


@pytest.mark.parametrize("loss, first", [("legacy_sum", "query"), ("two_way", "key")])
def test_enqueue_order(loss, first):
    """Legacy enqueues the original's [k1, k2]: the keys of the query view's latents first.

    At the first step every momentum copy still equals its online model (the EMA of equal
    weights), so a key is the online network's normalised output on that view.
    """
    torch.manual_seed(1)
    views = {"query": torch.randn(1, 6, 3, 16, 16), "key": torch.randn(1, 6, 3, 16, 16)}
    module = tiny_module(loss)
    before = copy.deepcopy(module)
    fit_one_step(module, {**views, "client_ids": torch.tensor([0]), "step": 0})

    network = torch.nn.Sequential(before.bank.online[0], before.server, before.head)
    with torch.no_grad():
        keys = {name: F.normalize(network(x[0]), dim=1) for name, x in views.items()}
    second = "key" if first == "query" else "query"
    expected = torch.cat([keys[first], keys[second]])
    torch.testing.assert_close(module.queue.keys[:12], expected, rtol=0, atol=1e-5)
    assert module.queue.ptr.item() == 12


def test_legacy_client_period_comes_from_the_data_modules_pool():
    dm = small_datamodule(num_clients=8, clients_per_step=2)
    module = tiny_module(num_clients=8, client_schedule="legacy_per_client_step")
    module.trainer = types.SimpleNamespace(datamodule=dm)
    module.setup("fit")
    assert module.client_schedule.legacy_period == 200 * 4
    assert module.code_epoch_steps == dm.plan.code_epoch_steps
    pinned = tiny_module(client_schedule="legacy_per_client_step", legacy_client_period=7)
    pinned.trainer = types.SimpleNamespace(datamodule=dm)
    pinned.setup("fit")
    assert pinned.client_schedule.legacy_period == 7
    alone = tiny_module(client_schedule="legacy_per_client_step")
    alone.trainer = types.SimpleNamespace(datamodule=None)
    with pytest.raises(ConfigError, match="legacy_client_period"):
        alone.setup("fit")


def test_fedavg_follows_the_plans_rounds():
    dm = small_datamodule()
    callback = FedAvgCallback()
    callback.on_train_start(types.SimpleNamespace(datamodule=dm), None)
    assert callback.plan == dm.plan
    given = FedAvgCallback(plan=FederatedPlan(sync_every=3))
    given.on_train_start(types.SimpleNamespace(datamodule=None), None)
    assert [t for t in range(9) if given.plan.ends_round(t)] == [2, 5, 8]
    with pytest.raises(ConfigError, match="FederatedPlan"):
        FedAvgCallback().on_train_start(types.SimpleNamespace(datamodule=None), None)


# 48 images over 4 clients, 4 a step: code epochs of 3 steps, each a round of 2 and one of 1.
EPOCH_RUN = [o for o in TINY if not o.startswith("sfl.sync_every=")]
EPOCH_RUN += ["sfl=legacy", "sfl.pool=epoch", "sfl.sync_every=2", "~callbacks.knn"]
EPOCH_RUN += ["~callbacks.linear_probe", "callbacks.checkpoint.every_n_train_steps=100"]


def test_resume_with_epoch_pools_continues_exactly(compose_train, tmp_path):
    """8 steps in one go equal 4 steps (mid code epoch, mid round), a Ctrl-C and a resume."""
    common = [*EPOCH_RUN, "trainer.max_steps=8"]
    straight = compose_train(common)
    metrics = train(straight)
    assert metrics["fl/syncs"] == 5  # after steps 1, 2 | 4, 5 | 7

    interrupted = compose_train(common)
    interrupted.paths.output_dir = str(tmp_path / "interrupted")
    with open_dict(interrupted):
        interrupted.callbacks.interrupt = {"_target_": "test_train.InterruptAt", "step": 4}
    assert train(interrupted)["interrupted"] == "SIGINT"
    checkpoint = tmp_path / "interrupted" / "checkpoints" / "last.ckpt"
    resumed = compose_train([*common, f"ckpt_path={checkpoint}"])
    resumed.paths.output_dir = str(tmp_path / "resumed")
    assert train(resumed)["fl/syncs"] == 5

    want = flat_state(Path(straight.paths.output_dir) / "checkpoints" / "last.ckpt")
    got = flat_state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
