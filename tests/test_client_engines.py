"""The two client engines (``sfl.client_engine=loop|vmap``) are the same algorithm.

Whole training runs agree after 20 steps with FedAvg in between, checkpoints of one engine resume
in the other, and the vmap engine's SGD is ``torch.optim.SGD`` client by client. Runs compare in
float64, where the engines agree to rounding: in float32 the grouped convolution of ``vmap``
rounds differently from one convolution per client, and the tiny test network (width 8, 16 px,
GroupNorm over 16-64 values) amplifies those 1e-7 differences in the server's gradients.
"""

from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.models import build_split_model
from mocosfl.sfl import make_client_bank
from mocosfl.train import train

from helpers import TINY, flat_state

RUN = [*TINY, "~callbacks.knn", "~callbacks.linear_probe", "trainer.precision=64-true"]
RTOL = 1e-9  # float64: the engines differ only in summation order


def assert_same_state(
    got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float = 1e-12
) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=atol, msg=name)


def test_engines_agree_after_20_steps_with_fedavg(compose_train, tmp_path):
    states = {}
    for engine in ("loop", "vmap"):
        cfg = compose_train([*RUN, "trainer.max_steps=20", f"sfl.client_engine={engine}"])
        cfg.paths.output_dir = str(tmp_path / engine)
        metrics = train(cfg)
        assert metrics["fl/syncs"] == 7  # every 3 steps and at the end
        states[engine] = flat_state(tmp_path / engine / "checkpoints" / "last.ckpt")
    assert any(k.startswith("opt/client") for k in states["vmap"])
    assert_same_state(states["vmap"], states["loop"])


@pytest.mark.parametrize("first, then", [("vmap", "loop"), ("loop", "vmap")])
def test_checkpoint_of_one_engine_resumes_in_the_other(compose_train, tmp_path, first, then):
    """12 steps of ``then`` equal 6 steps of ``first``, a Ctrl-C, and 6 more steps of ``then``."""
    common = [
        *RUN,
        "trainer.max_steps=12",
        "callbacks.checkpoint.every_n_train_steps=6",
        "callbacks.checkpoint.keep_every_n_steps=6",
    ]
    straight = compose_train([*common, f"sfl.client_engine={then}"])
    straight.paths.output_dir = str(tmp_path / "straight")
    train(straight)

    interrupted = compose_train([*common, f"sfl.client_engine={first}"])
    interrupted.paths.output_dir = str(tmp_path / "interrupted")
    with open_dict(interrupted):
        interrupted.callbacks.interrupt = {"_target_": "test_train.InterruptAt", "step": 6}
    assert train(interrupted)["interrupted"] == "SIGINT"
    checkpoint = tmp_path / "interrupted" / "checkpoints" / "last.ckpt"
    resumed = compose_train([*common, f"sfl.client_engine={then}", f"ckpt_path={checkpoint}"])
    resumed.paths.output_dir = str(tmp_path / "resumed")
    train(resumed)

    # The module is built in float64, so the resume restores the float64 weights unrounded:
    # the engines' own tolerance holds across a resume too.
    step12 = Path("checkpoints") / "step_0000012.ckpt"
    got, want = (flat_state(tmp_path / run / step12) for run in ("resumed", "straight"))
    assert_same_state(got, want)


@pytest.mark.parametrize("nesterov, dampening", [(False, 0.0), (True, 0.0), (False, 0.5)])
def test_vmap_sgd_is_torch_sgd_per_client(nesterov, dampening):
    """Three steps of different pools with per-client rates: the same weights and buffers."""
    torch.manual_seed(0)
    client = build_split_model("resnet18", 1, 8, "gn", True, None, 16).client.double()
    sgd = partial(
        torch.optim.SGD,
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        nesterov=nesterov,
        dampening=dampening,
    )
    banks = {e: make_client_bank(e, client, 4, sgd, ema_decay=0.9) for e in ("loop", "vmap")}
    images = torch.randn(3, 2, 3, 16, 16, dtype=torch.float64)
    for pool in ([0, 2], [2, 3], [0, 2]):
        for bank in banks.values():
            bank.update_momentum(pool)
            latents = bank.encode(pool, images[: len(pool)])
            keys = bank.encode_momentum(pool, images[: len(pool)].flip(-1))
            (latents * keys).sum().backward()
            bank.step(pool, lambda c: 0.05 * (c + 1))
    loop, vmap = banks["loop"], banks["vmap"]
    for kind in ("online", "momentum"):
        want, got = loop.states(kind, range(4)), vmap.states(kind, range(4))
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=1e-12)
    for want, got in zip(loop.optimizer_state(), vmap.optimizer_state()):
        assert got["state"].keys() == want["state"].keys()
        for i in want["state"]:
            torch.testing.assert_close(
                got["state"][i]["momentum_buffer"], want["state"][i]["momentum_buffer"]
            )
    assert vmap.steps.tolist() == loop.steps.tolist() == [2, 0, 3, 1]


def test_vmap_engine_refuses_what_it_cannot_stack():
    sgd = partial(torch.optim.SGD, lr=0.1)
    with pytest.raises(ConfigError, match="without buffers"):
        make_client_bank("vmap", nn.BatchNorm1d(2), 2, sgd)
    with pytest.raises(ConfigError, match="SGD clients only"):
        make_client_bank("vmap", nn.Linear(2, 2), 2, partial(torch.optim.Adam, lr=0.1))
    with pytest.raises(ConfigError, match="choose loop or vmap"):
        make_client_bank("jit", nn.Linear(2, 2), 2, sgd)


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_1000_clients_cost_their_models_and_nothing_else(engine):
    """Per client: the model, its momentum copy and one SGD buffer per parameter, plus three
    counters; the paper's ResNet-18 client at cut 1 (1,856 parameters)."""
    client = build_split_model("resnet18", 1, 64, "gn", True, None, 32).client
    bank = make_client_bank(engine, client, 1000, partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    pool = list(range(0, 1000, 10))
    bank.encode(pool, torch.randn(100, 1, 3, 32, 32)).sum().backward()
    bank.step(pool, lambda c: 0.1)  # the loop engine creates its SGD buffers on the first step

    tensors = {t.untyped_storage().data_ptr(): t for t in [*bank.parameters(), *bank.buffers()]}
    if engine == "loop":
        for opt in bank.optimizers:
            for state in opt.state.values():
                tensors[state["momentum_buffer"].untyped_storage().data_ptr()] = state[
                    "momentum_buffer"
                ]
    total = sum(t.untyped_storage().nbytes() for t in tensors.values())
    model_bytes = 1856 * 4
    counters = 1000 * (4 + 1 + 8 + 1)  # weights, participated, steps, (vmap) sgd_started
    buffers = 1000 if engine == "vmap" else len(pool)  # SGD buffers: every client, or those stepped
    assert total <= (2 * 1000 + buffers) * model_bytes + counters
