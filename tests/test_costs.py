"""Cost accounting: measured client costs, traffic formulas, the callback and `make overhead`."""

import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from torch import nn

from mocosfl.costs import MB, client_traffic, measure_client, saved_bytes
from mocosfl.errors import ConfigError
from mocosfl.models import build_split_model
from mocosfl.overhead import overhead
from mocosfl.sfl.plan import FederatedPlan
from mocosfl.train import train

from data_helpers import federated_datamodule
from helpers import TINY, compose

CIFAR = (3, 32, 32)


def test_client_params_and_flops_of_the_papers_resnet18():
    """docs/paper.md: 1,856 parameters at cut 1 (MocoSFL-1), 75,840 at cut 2 (MocoSFL-3)."""
    cut1 = measure_client(build_split_model(cut_layer=1).client, CIFAR)
    cut2 = measure_client(build_split_model(cut_layer=2).client, CIFAR)
    assert (cut1.params, cut2.params) == (1_856, 75_840)
    assert cut1.fedavg_numel == cut1.params  # GroupNorm: no buffers to average
    assert cut1.latent_numel == cut2.latent_numel == 64 * 32 * 32
    # The stem is one 3x3 conv 3 -> 64 at 32x32 (GroupNorm and ReLU are not counted).
    assert cut1.forward_flops == 2 * 3 * 64 * 3 * 3 * 32 * 32
    assert cut2.forward_flops > 10 * cut1.forward_flops
    assert cut2.forward_backward_flops > cut1.forward_backward_flops


@pytest.mark.parametrize("stride", [1, 2])
def test_flops_of_a_conv_layer(stride):
    """2 * Cin * Cout * k * k * H_out * W_out, and the backward as a training step runs it."""
    c_in, c_out, k, size = 3, 8, 3, 16
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=1, bias=False)
    costs = measure_client(conv, (c_in, size, size))
    out = size // stride
    conv_flops = 2 * c_in * c_out * k * k * out * out
    assert costs.forward_flops == conv_flops
    # The input image needs no gradient: the backward is the weight gradient only.
    assert costs.forward_backward_flops == 2 * conv_flops

    second = nn.Conv2d(c_out, c_out, k, padding=1, bias=False)
    two = measure_client(nn.Sequential(conv, second), (c_in, size, size))
    second_flops = 2 * c_out * c_out * k * k * out * out
    assert two.forward_flops == conv_flops + second_flops
    # The inner conv also passes the gradient on to its input: weight + input gradient.
    assert two.forward_backward_flops == 2 * conv_flops + 3 * second_flops


def test_activation_memory_of_a_conv_and_relu():
    """A conv keeps its input, a ReLU its output (= the latent, counted once); nothing else."""
    client = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    costs = measure_client(client, (3, 16, 16))
    assert costs.latent_bytes == 8 * 16 * 16 * 4
    assert costs.activation_bytes == 3 * 16 * 16 * 4 + costs.latent_bytes


def test_activation_memory_is_per_image_and_above_the_latent():
    model = build_split_model(cut_layer=2, width=16).client
    sizes = [saved_bytes(model, torch.zeros(n, *CIFAR)) for n in (1, 2, 4)]
    per_image = sizes[1] - sizes[0]
    assert sizes[2] - sizes[1] == 2 * per_image  # linear in the images
    costs = measure_client(model, CIFAR)
    assert costs.activation_bytes == per_image
    assert costs.activation_bytes > costs.latent_bytes


def test_measuring_leaves_the_model_and_the_rng_alone():
    model = build_split_model(cut_layer=2, width=8).client.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    measure_client(model, CIFAR)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training and all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


PLAN = FederatedPlan(num_clients=4, clients_per_step=2, client_batch_size=3, sync_every=5)


@pytest.mark.parametrize(
    "loss, sync_momentum, clients_train, up, down, model",
    [
        # 10 steps x 2 clients x 3 images / 4 clients = 15 images a client, 40 B a latent;
        # 2 syncs x 2 of 4 clients = 1 sync a client, 400 B a model (800 with the momentum copy).
        ("two_way", True, True, 4 * 15 * 40, 2 * 15 * 40, 800),
        ("legacy_sum", False, True, 2 * 15 * 40, 1 * 15 * 40, 400),
        ("one_way", True, True, 2 * 15 * 40, 1 * 15 * 40, 800),
        # Frozen clients: one latent a view, no gradients, nothing to average.
        ("two_way", True, False, 2 * 15 * 40, 0, 0),
    ],
)
def test_traffic_by_hand(loss, sync_momentum, clients_train, up, down, model):
    traffic = client_traffic(
        model_numel=100,
        latent_numel=10,
        plan=PLAN,
        steps=10,
        syncs=2,
        loss=loss,
        sync_momentum=sync_momentum,
        clients_train=clients_train,
        bytes_per_element=4,
    )
    assert (traffic.latents_up, traffic.gradients_down) == (up, down)
    assert traffic.model_up == traffic.model_down == model
    assert (traffic.upload, traffic.download) == (up + model, down + model)


def test_syncs_and_pools():
    assert PLAN.syncs_per_epoch(10) == 2.0
    assert PLAN.syncs_in_run(12) == 3  # two rounds and the last, short one
    assert FederatedPlan(4, 2, 3, sync_every=0).syncs_in_run(12) == 0
    # A new pool of 2 of 4 each step: a client misses both draws of a round with p = 1/4.
    assert FederatedPlan(4, 2, 3, sync_every=2, pool="step").clients_per_sync() == pytest.approx(
        3.0
    )


def test_traffic_reproduces_the_papers_table1():
    """The paper's Table 1 (docs/paper.md, Communication: 1000 clients, a pool of 100, 1 image,
    FedAvg every 50 steps, 100k steps = 200 syncs and 10,000 images a client): weights 1.4 /
    57.9 MB a client model a sync, and latents 5,000 MB for two latents an image (the legacy
    loss's query and key)."""
    plan = FederatedPlan(num_clients=1000, clients_per_step=100, client_batch_size=1, sync_every=50)
    for params, weights_mb in ((1_856, 1.4), (75_840, 57.9)):
        traffic = client_traffic(
            model_numel=params,
            latent_numel=64 * 32 * 32,
            plan=plan,
            steps=100_000,
            syncs=plan.syncs_in_run(100_000),
            loss="legacy_sum",
            sync_momentum=False,
        )
        assert round(traffic.model_up / MB, 1) == weights_mb
        assert traffic.latents_up / MB == 5000.0


@pytest.mark.filterwarnings("ignore:data.val_images=100 capped")
@pytest.mark.parametrize("val_images, max_train_images", [(16, None), (100, None), (16, 20)])
def test_split_sizes_from_settings_match_the_loaded_data(val_images, max_train_images):
    datamodule = federated_datamodule(
        name="synthetic",
        root="unused",
        download=False,
        image_size=8,
        val_images=val_images,
        max_train_images=max_train_images,
        num_clients=4,
        clients_per_step=2,
        num_workers=0,
        synthetic={"train_size": 64, "test_size": 8},
    )
    datamodule.setup()
    sizes = datamodule.settings.split_sizes(64)
    assert sizes == (datamodule.num_val_images, datamodule.num_train_images)


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """The final model and the global torch RNG state the run's checkpoint holds."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return {**ckpt["state_dict"], "rng/torch": ckpt["rng_states"]["torch"]}


def test_callback_logs_costs_into_metrics_json_and_changes_nothing(compose_train, tmp_path):
    common = [*TINY, "trainer.max_steps=7", "~callbacks.knn", "~callbacks.linear_probe"]
    cfg = compose_train(common)
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    client = build_split_model(cut_layer=1, width=8, image_size=16).client
    assert metrics["cost/client_params"] == measure_client(client, (3, 16, 16)).params
    assert metrics["cost/latent_numel"] == 8 * 16 * 16
    assert metrics["cost/steps_per_epoch"] == 6  # 48 images at a server batch of 8
    for key in ("upload", "download"):
        for span in ("epoch", "run"):
            assert metrics[f"cost/{key}_mb_per_client_{span}"] > 0
    assert metrics["cost/client_mflops_per_image"] > metrics["cost/client_forward_mflops_per_image"]
    # 7 steps in rounds of 3: the FedAvg callback synced as often as the formula says.
    assert metrics["fl/syncs"] == FederatedPlan(4, 2, 4, 3).syncs_in_run(7)

    without = compose_train([*common, "~callbacks.costs"])
    without.paths.output_dir = str(tmp_path / "without")
    plain = train(without)
    assert not any(key.startswith("cost/") for key in plain)
    assert plain["train/loss"] == metrics["train/loss"]
    want, got = final_state(Path(without.paths.output_dir)), final_state(Path(cfg.paths.output_dir))
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def compose_overhead(tmp_path: Path, overrides: list[str]):
    cfg = compose("overhead", tmp_path / "overhead", overrides)
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")  # no CIFAR there
    return cfg


def test_overhead_prints_the_table_for_synthetic_data(tmp_path, capsys):
    cfg = compose_overhead(tmp_path, ["data=synthetic"])
    record = overhead(cfg)
    printed = capsys.readouterr().out
    assert re.search(r"client parameters +1,856\n", printed)
    assert "whole run (" in printed and "paper: MocoSFL-1" in printed
    saved = json.loads((tmp_path / "overhead" / "overhead.json").read_text())
    assert saved == json.loads(json.dumps(record))
    # 2000 synthetic images, 200 held out, at a server batch of 5 x 20: 18 steps an epoch.
    assert saved["costs"]["steps_per_epoch"] == 18
    assert saved["costs"]["total_steps"] == 18 * cfg.trainer.max_epochs


def test_overhead_of_a_paper_row_needs_no_cifar_files(tmp_path, capsys):
    """The Table 3 row at 1000 clients, as published: the paper's weights column, from settings."""
    cfg = compose_overhead(tmp_path, ["experiment=table3_c10_iid_1000clients_cut1", "sfl=legacy"])
    metrics = overhead(cfg)["metrics"]
    assert "paper: MocoSFL-1" in capsys.readouterr().out
    assert metrics["cost/steps_per_epoch"] == 450  # 45,000 images at a server batch of 100
    assert round(metrics["cost/model_up_mb_per_client_run"], 1) == 1.4
    assert metrics["cost/latents_up_mb_per_client_run"] == 5000.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data=imagefolder", "data.root={tmp}/none"], "image folder .* not found"),
        (["sfl.num_clients=4", "sfl.clients_per_step=8"], "clients_per_step=8 is larger"),
    ],
    ids=["missing-folder", "pool-too-large"],
)
def test_overhead_reports_bad_input_in_one_line(tmp_path, overrides, message):
    cfg = compose_overhead(tmp_path, [o.format(tmp=tmp_path) for o in overrides])
    with pytest.raises(ConfigError, match=message):
        overhead(cfg)


def test_overhead_of_frozen_clients(tmp_path, capsys):
    """TAResSFL stage 2 (sfl.client_lr=0): the expert's C4S2 latents go up, nothing comes back."""
    cfg = compose_overhead(tmp_path, ["experiment=table4_c10_100clients_cut1_target1pct"])
    metrics = overhead(cfg)["metrics"]
    assert "paper: MocoSFL-1/-3 + TAResSFL" in capsys.readouterr().out
    assert metrics["cost/latent_numel"] == 4 * 16 * 16
    assert metrics["cost/gradients_down_mb_per_client_run"] == 0
    assert metrics["cost/model_up_mb_per_client_run"] == 0
    forward = metrics["cost/client_forward_mflops_per_image"]
    assert metrics["cost/client_mflops_per_image"] == pytest.approx(2 * forward)


NUMBER = re.compile(r"\d{1,3}(,\d{3})*(\.\d+)?x?")  # 1,800,025.5 and 0.605x; not 25.51,800,025.5


@pytest.mark.parametrize(
    "overrides", [[], ["experiment=table3_c10_iid_100clients_cut1"]], ids=["default", "table3"]
)
def test_overhead_columns_never_run_together(tmp_path, capsys, caplog, overrides):
    """Whole-run traffic of the default config is millions of MB: every number stays a separate,
    right-aligned cell; the job ends with its summary."""
    import logging

    caplog.set_level(logging.INFO, logger="mocosfl")  # where print_summary goes under pytest
    overhead(compose_overhead(tmp_path, overrides))
    printed = capsys.readouterr().out
    tables = [
        block.splitlines()
        for block in printed.split("\n\n")
        if block.lstrip().startswith(("traffic per client", "Table 1"))
    ]
    assert len(tables) == 2
    for lines in tables:
        rows = [line for line in lines if re.search(r"\d\s*$", line)]  # the rows of numbers
        assert rows, lines
        for row in rows:
            cells = re.split(r"\s{2,}", row.strip())[1:]
            assert all(NUMBER.fullmatch(cell) for cell in cells), row
        header = next(line for line in lines if "Total" in line or "total" in line)
        # Right-aligned: a row's last number ends under its header's column (or one before).
        assert all(len(row) <= len(header) for row in rows), lines
    summary = printed + caplog.text
    assert f"run dir       {tmp_path / 'overhead'}" in summary
    assert "file written  overhead.json" in summary
