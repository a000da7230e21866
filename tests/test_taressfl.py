"""TAResSFL: the expert's data, stage 1 against a simulated attacker on real CIFAR-10 (alpha 2
against alpha 0), its exact resume, and the stage 1 -> stage 2 chain (frozen clients, trained
server)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from mocosfl.api import load_module
from mocosfl.data import build_datamodule
from mocosfl.data.image_set import DATASET_STATS
from mocosfl.data.transforms import normalize
from mocosfl.errors import ConfigError
from mocosfl.privacy import AttackSettings, ExpertDataModule, attack_checkpoint
from mocosfl.privacy.data import denormalize
from mocosfl.privacy.taressfl import init_from_checkpoint
from mocosfl.sfl.plan import FederatedPlan
from mocosfl.train import train

from data_helpers import write_tiny_cifar10
from helpers import CLASS_SPLIT, ONE_CLIENT, STAGE1, TINY, flat_state


def test_expert_data_splits_classes_and_serves_auxiliary_then_target(compose_train):
    cfg = compose_train(STAGE1)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    for split in ("train", "val", "test"):
        _, labels = datamodule.split_images(split)
        assert set(labels.tolist()) <= {0, 1, 2, 3, 4}, split
    expert, aux = datamodule.client_parts[0], datamodule.aux_indices
    assert set(datamodule.train_set.labels[aux].tolist()) <= {5, 6, 7, 8, 9}
    assert not np.intersect1d(aux, datamodule.val_indices).size
    assert expert.shape[0] == round(0.5 * datamodule.split_indices("train").shape[0])
    assert set(expert) <= set(datamodule.split_indices("train"))
    assert datamodule.client_sizes.tolist() == [expert.shape[0] + aux.shape[0]]
    assert datamodule.steps_per_epoch == max(-(-aux.shape[0] // 4), -(-expert.shape[0] // 4))
    batch = datamodule.step_dataset()[0]
    assert batch["query"].shape == batch["query_pixels"].shape == (1, 8, 3, 16, 16)
    assert batch["client_ids"].tolist() == [0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("sfl.num_clients=2", "the expert is one client"),
        ("data.target_fraction=1.5", "target_fraction"),
        ("+data.aux.size=3", "unknown data.aux setting"),
    ],
)
def test_expert_data_refuses_bad_settings(compose_train, override, message):
    cfg = compose_train([*STAGE1, override])
    with pytest.raises(ConfigError, match=message):
        build_datamodule(cfg)


def test_expert_data_normalises_each_set_with_its_own_statistics(tmp_path, monkeypatch):
    """Fixed (docs/differences.md, "auxiliary-set statistics"): the simulated attacker's ground
    truth of an auxiliary image comes back with the auxiliary set's statistics, that of a target
    image with the target's."""
    aux_stats = ((0.2, 0.3, 0.4), (0.5, 0.6, 0.7))
    monkeypatch.setitem(DATASET_STATS, "synthetic", aux_stats)
    write_tiny_cifar10(tmp_path, per_batch=10)
    datamodule = ExpertDataModule(
        name="cifar10",
        root=str(tmp_path),
        download=False,
        val_images=10,
        plan=FederatedPlan(num_clients=1, clients_per_step=1, client_batch_size=3),
        target_fraction=0.5,
        aux={"name": "synthetic", "synthetic": {"train_size": 40, "test_size": 8}, "batch_size": 5},
    )
    datamodule.setup()
    assert datamodule.aux_indices.shape[0] == 40 and datamodule.client_parts[0].shape[0] == 20
    batch = datamodule.step_dataset()[3]
    pixels, query = batch["query_pixels"][0], batch["query"][0]
    assert pixels.shape == (8, 3, 32, 32)
    assert 0 <= float(pixels.min()) and float(pixels.max()) <= 1
    target_stats = (datamodule.mean, datamodule.std)
    torch.testing.assert_close(normalize(pixels[:5], *aux_stats), query[:5], atol=1e-5, rtol=0)
    torch.testing.assert_close(normalize(pixels[5:], *target_stats), query[5:], atol=1e-5, rtol=0)
    assert not torch.allclose(denormalize(query[:5], *target_stats), pixels[:5], atol=1e-2)


def test_stage2_starts_from_the_expert_and_trains_only_the_server(compose_train, tmp_path):
    stage1 = compose_train(STAGE1)
    metrics = train(stage1)
    assert metrics["taressfl/gan_ssim"] >= 0 and "taressfl/penalty_active" in metrics
    expert_ckpt = Path(stage1.paths.output_dir) / "checkpoints" / "final.ckpt"

    stage2 = compose_train(
        [*TINY, "experiment=taressfl_stage2", "sfl.cut_layer=1", f"init_from={expert_ckpt}"]
        + ["trainer.max_steps=6", "~callbacks.knn", "~callbacks.linear_probe"]
    )
    stage2.paths.output_dir = str(tmp_path / "stage2")
    assert stage2.sfl.client_lr == 0 and stage2.sfl.lr == 0.001
    train(stage2)
    expert = load_module(expert_ckpt)
    trained = load_module(tmp_path / "stage2" / "checkpoints" / "last.ckpt")  # every client
    assert trained.bank.num_clients == 4 and trained.bank.steps.sum() > 0
    client = expert.bank.averaged_client().state_dict()
    for model in (*trained.bank.online, *trained.bank.momentum):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, client[name], rtol=0, atol=1e-6, msg=name)
    moved = [
        float((a - b).abs().max())
        for a, b in zip(expert.server.parameters(), trained.server.parameters())
    ]
    assert max(moved) > 1e-5, "the server did not train"

    # A Table 4 row names the expert's share of the target data; another share is refused.
    with pytest.raises(ConfigError, match=r"target_fraction=0\.5, this row needs .* 0\.01"):
        init_from_checkpoint(trained, str(expert_ckpt), target_fraction=0.01)
    init_from_checkpoint(trained, str(expert_ckpt), target_fraction=0.5)


def test_stage1_resumes_exactly(compose_train, tmp_path):
    """8 steps in one go equal 4 steps, a Ctrl-C and a resume: the simulated attacker and its
    optimizer are part of the checkpoint."""
    common = [
        *STAGE1,
        "trainer.max_steps=8",
        "callbacks.checkpoint.every_n_train_steps=4",
        "callbacks.checkpoint.keep_every_n_steps=4",
    ]
    runs = {}
    for name, extra in (("straight", []), ("interrupted", ["interrupt"]), ("resumed", [])):
        cfg = compose_train(common)
        cfg.paths.output_dir = str(tmp_path / name)
        if extra:
            with open_dict(cfg):
                cfg.callbacks.interrupt = {"_target_": "test_train.InterruptAt", "step": 4}
            assert train(cfg)["interrupted"] == "SIGINT"
            continue
        if name == "resumed":
            cfg.ckpt_path = str(tmp_path / "interrupted" / "checkpoints" / "step_0000004.ckpt")
        train(cfg)
        runs[name] = tmp_path / name / "checkpoints" / "step_0000008.ckpt"
    want, got = (
        {**flat_state(runs[n]), **simulator_state(runs[n])} for n in ("straight", "resumed")
    )
    assert want.keys() == got.keys() and any(k.startswith("model/simulator.") for k in want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)


def simulator_state(ckpt_path: Path) -> dict[str, torch.Tensor]:
    """The simulated attacker's Adam moments, by parameter index and name."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return {
        f"opt/simulator/{index}/{key}": value
        for index, buffers in ckpt["simulator_optimizer"]["state"].items()
        for key, value in buffers.items()
    }


@pytest.mark.parametrize(
    "init_from, message",
    [("null", "init_from is not set"), ("/nonexistent.ckpt", "does not exist")],
)
def test_stage2_needs_an_existing_expert(compose_train, init_from, message):
    cfg = compose_train([*TINY, "experiment=taressfl_stage2", f"init_from={init_from}"])
    with pytest.raises(ConfigError, match=message):
        train(cfg)


# Stage 1 on real CIFAR-10, cut short: a narrow ResNet-18, 16 target + 16 auxiliary images a
# step, 100 steps at constant rates (a slice of a long run). The simulated attacker must keep up
# with the client within those 100 steps instead of 78,000: it learns at 1e-2 (the paper: 1e-3,
# decayed), and as it only reaches an SSIM of about 0.45, the hinge sits at 0.3 instead of 0.6.
# Both runs share every setting but alpha. Over seeds 1, 2, 3 and 1234 the defence multiplied the
# attack MSE by 1.8 to 4.4 (at the paper's attacker rate it was 1.0 to 1.5: too close to test).
REAL_STAGE1 = [
    "data=imagefolder",
    "data.val_images=1000",
    "data.num_workers=0",
    "experiment=taressfl_stage1",
    *ONE_CLIENT,
    *CLASS_SPLIT,
    "data.target_fraction=0.02",  # about 500 target images next to 24,000 auxiliary ones
    "data.aux.batch_size=16",
    "sfl.client_batch_size=16",
    "sfl.cut_layer=1",
    "sfl.loss=one_way",
    "sfl.queue_size=1024",
    "sfl.server_schedule=constant",
    "sfl.client_schedule=constant",
    "model.width=8",
    "module.head_hidden_dim=256",
    "module.head_out_dim=128",
    "module.simulator_width=16",
    "module.simulator_blocks=1",
    "module.simulator_lr=1e-2",
    "module.simulator_milestones=[]",
    "module.target_ssim=0.3",
    "trainer=cpu",
    "trainer.max_steps=100",
    "logger=csv",
    "~callbacks.knn",
    "~callbacks.linear_probe",
    "~callbacks.progress",
    "num_threads=1",
]
# The attacker: 2% of the target classes' training images (about 500), 128 test images of
# those classes, a narrow decoder trained for a fixed 300 steps.
REAL_ATTACK = {"aux_fraction": 0.02, "num_targets": 128}
REAL_DECODER = AttackSettings(steps=300, width=16, num_blocks=1)


@pytest.mark.slow
@pytest.mark.long(seconds=110)
def test_stage1_defence_raises_the_attack_mse_on_real_cifar10(compose_train, cifar10_root):
    results = {}
    for alpha in (0.0, 2.0):
        cfg = compose_train([*REAL_STAGE1, f"data.root={cifar10_root}", f"module.alpha={alpha}"])
        run_dir = Path(cfg.paths.output_dir).with_name(f"alpha{alpha:g}")
        cfg.paths.output_dir = str(run_dir)
        metrics = train(cfg)
        attack = attack_checkpoint(
            str(run_dir / "checkpoints" / "final.ckpt"), **REAL_ATTACK, settings=REAL_DECODER
        )
        results[f"alpha={alpha:g}"] = {
            **attack.metrics(),
            "taressfl/gan_ssim": metrics["taressfl/gan_ssim"],
            "attack_seconds": attack.seconds,
        }
    record = {"results": results, "steps": 100, "bottleneck": "C4S2", "attack": REAL_ATTACK}
    (run_dir.parent / "taressfl.json").write_text(json.dumps(record, indent=1))
    plain, defended = results["alpha=0"], results["alpha=2"]
    print(
        f"\nreal CIFAR-10, stage 1, 100 steps, C4S2: attack MSE {plain['attack/mse']:.4f} "
        f"(alpha 0) -> {defended['attack/mse']:.4f} (alpha 2); SSIM {plain['attack/ssim']:.3f} "
        f"-> {defended['attack/ssim']:.3f}"
    )
    assert defended["attack/mse"] > plain["attack/mse"] * 1.3, record
    assert defended["attack/ssim"] < plain["attack/ssim"], record
