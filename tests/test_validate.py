"""Settings are checked before anything is built: ranges and types of a composed config, each
problem under the key the user sets, and command-line typos with a "did you mean"."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mocosfl.config import (
    CONFIG_DIR,
    check_overrides_or_exit,
    suggest_key_typos,
    validate_config,
)
from mocosfl.data.partition import make_partition
from mocosfl.errors import ConfigError
from mocosfl.models import build_split_model
from mocosfl.sfl import MocoSFL
from mocosfl.sfl.plan import FederatedPlan
from mocosfl.sfl.schedules import LRSchedule

from helpers import TINY

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def problems(compose_train, *overrides: str) -> str:
    """The validation message of the config with ``overrides`` ("" when it is valid)."""
    try:
        validate_config(compose_train(list(overrides)))
    except ConfigError as err:
        return str(err)
    return ""


# -- validate_config ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        ("sfl.temperature=0", "sfl.temperature=0 must be > 0"),
        ("sfl.temperature=nan", "sfl.temperature=nan must be a number"),
        ("sfl.ema_decay=1", "sfl.ema_decay=1 must be in [0, 1)"),
        ("sfl.ema_decay=-0.1", "sfl.ema_decay=-0.1 must be in [0, 1)"),
        ("sfl.lr=-1", "sfl.lr=-1 must be >= 0"),
        ("sfl.client_lr=-0.5", "sfl.client_lr=-0.5 must be >= 0"),
        ("sfl.queue_size=0", "sfl.queue_size=0 must be >= 1"),
        ("sfl.sync_every=-1", "sfl.sync_every=-1 must be >= 0"),
        ("sfl.cut_layer=0", "sfl.cut_layer=0 must be >= 1"),
        ("sfl.client_batch_size=0", "sfl.client_batch_size=0 must be >= 1"),
        ("sfl.clients_per_step=0", "sfl.clients_per_step=0 must be >= 1"),
        ("sfl.num_clients=0", "sfl.num_clients=0 must be >= 1"),
        ("sfl.legacy_client_period=0", "sfl.legacy_client_period=0 must be >= 1"),
        ("sfl.pool=never", "sfl.pool='never' must be one of round, step, epoch"),
        ("sfl.loss=maybe", "sfl.loss='maybe' must be one of two_way, one_way, legacy_sum"),
        ("callbacks.knn.feature=pooled", "callbacks.knn.feature='pooled' must be one of backbone"),
        ("sfl.sync_momentum=yes", "sfl.sync_momentum='yes' must be true or false"),
        ("sfl.server_schedule=linear", "sfl.server_schedule='linear' must be one of"),
        ("sfl.client_engine=threads", "sfl.client_engine='threads' must be one of loop, vmap"),
        ("data.val_images=-1", "data.val_images=-1 must be >= 0"),
        ("data.image_size=0", "data.image_size=0 must be >= 8"),
        ("data.dirichlet_alpha=0", "data.dirichlet_alpha=0 must be > 0"),
        ("data.classes_per_client=0", "data.classes_per_client=0 must be >= 1"),
        ("data.partition=random", "data.partition='random' must be one of iid, shards, dirichlet"),
        ("data.max_train_images=0", "data.max_train_images=0 must be >= 1"),
        ("data.root=???", "data.root must be set"),
        ("model.width=0", "model.width=0 must be >= 1"),
        ("model.norm=ln", "model.norm='ln' must be one of gn, bn"),
        ("model.bottleneck=C4S3", "model.bottleneck='C4S3' must be C<channels>S<stride>"),
        ("trainer.max_steps=0", "trainer.max_steps=0 must be -1 (no limit) or >= 1"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be -1 (no limit) or >= 1"),
        ("trainer.max_epochs=-1", "training would never end"),
        ("seed=-1", "seed=-1 must be in [0, 4294967295]"),
        ("num_threads=0", "num_threads=0 must be >= 1"),
        ("callbacks.checkpoint.every_n_train_steps=0", "every_n_train_steps=0 must be >= 1"),
        ("callbacks.knn.k=0", "callbacks.knn.k=0 must be >= 1"),
        ("callbacks.linear_probe.probe.lr=0", "callbacks.linear_probe.probe.lr=0 must be > 0"),
    ],
)
def test_a_bad_value_is_named_by_its_key(compose_train, override, message):
    found = problems(compose_train, override)
    assert message in found, found
    assert "\n" not in found


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sfl.num_clients=abc"], "sfl.num_clients='abc' must be an integer"),
        (["sizing=auto_adjust", "sfl.num_clients=abc"], "sfl.num_clients='abc' must be an integer"),
        (["sfl.num_clients=5.0"], "sfl.num_clients=5.0 must be an integer"),
        (["sfl.temperature=true"], "sfl.temperature=true must be a number"),
        (["seed=abc"], "seed='abc' must be an integer"),
    ],
)
def test_a_wrong_type_is_named_by_the_key_typed(compose_train, overrides, message):
    found = problems(compose_train, *overrides)
    assert found == message  # once: not again under module.num_clients


def test_values_copied_into_the_module_are_reported_under_sfl(compose_train):
    found = problems(compose_train, "sfl.clients_per_step=7")  # 5 clients by default
    assert found.startswith("sfl.clients_per_step=7 is larger than sfl.num_clients=5"), found
    found = problems(compose_train, "sfl.num_clients=-2")
    assert found.startswith("sfl.num_clients=-2") and "module." not in found, found


def test_a_setting_set_directly_in_the_module_is_reported_there(compose_train):
    assert problems(compose_train, "module.num_clients=0").startswith("module.num_clients=0")


def test_every_problem_is_listed_in_one_line(compose_train):
    found = problems(compose_train, "sfl.temperature=0", "model.width=0", "sfl.num_clients=x")
    assert found.count("; ") == 2 and "\n" not in found, found
    for key in ("sfl.temperature=0", "model.width=0", "sfl.num_clients='x'"):
        assert key in found


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        TINY,
        [*TINY, "trainer.max_steps=6", "callbacks.knn.k=5", "sfl.client_engine=vmap"],
        ["sfl=legacy"],
        ["sizing=auto_adjust", "sfl.num_clients=1000"],
        ["sfl=legacy", "sizing=auto_adjust"],
        ["sfl.loss=one_way", "sfl.loss=legacy_sum"],
        ["sfl.temperature=1", "sfl.ema_decay=0", "sfl.sync_every=0", "sfl.client_lr=0"],
        ["callbacks=attack", "trainer=ddp", "data=cifar100", "data.partition=dirichlet"],
        ["hparams_search=knn_optuna"],
    ],
    ids=lambda o: " ".join(o)[:60] or "defaults",
)
def test_valid_configs_pass(compose_train, overrides):
    assert problems(compose_train, *overrides) == ""


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_validates(compose_train, name):
    cfg = compose_train([f"experiment={name}"])
    if OmegaConf.is_missing(cfg.data, "root"):
        cfg.data.root = "/dataset/supplied/by/the/user"  # as tests/test_experiments.py does
    validate_config(cfg)


def test_the_overhead_config_validates(tmp_path):
    from helpers import compose

    validate_config(compose("overhead", tmp_path, ["experiment=demo"]))


# -- the objects built from Python name the same keys -------------------------------------------
def test_the_plan_names_the_sfl_keys():
    with pytest.raises(ConfigError, match=r"^sfl\.clients_per_step=7 is larger than sfl\.num"):
        FederatedPlan(num_clients=5, clients_per_step=7)
    with pytest.raises(ConfigError, match=r"^sfl\.sync_every=-1"):
        FederatedPlan(sync_every=-1)
    with pytest.raises(ConfigError, match=r"^unknown sfl\.pool='daily'"):
        FederatedPlan(pool="daily")
    with pytest.raises(ConfigError, match=r"lower sfl\.num_clients"):
        make_partition("iid", np.zeros(3, dtype=np.int64), 4, seed=0)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"temperature": 0.0}, r"sfl\.temperature=0\.0"),
        ({"ema_decay": 1.0}, r"sfl\.ema_decay=1\.0"),
        ({"queue_size": 0}, r"sfl\.queue_size=0"),
        ({"server_schedule": "linear"}, r"sfl\.server_schedule='linear'"),
        ({"legacy_client_period": 0}, r"sfl\.legacy_client_period=0"),
    ],
)
def test_module_refuses_bad_settings(setting, message):
    def sgd(params):
        return torch.optim.SGD(params, lr=0.1)

    split = build_split_model("resnet18", cut_layer=1, width=8, image_size=16)
    with pytest.raises(ConfigError, match=message):
        MocoSFL(split, 2, sgd, sgd, client_sizes=[4, 4], **setting)


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match=r"sfl\.server_schedule"):
        LRSchedule("linear")


# -- command-line typos -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sfl.num_clent=5"], "sfl.num_clent is not a setting; did you mean sfl.num_clients?"),
        (["data.partiton=iid"], "data.partiton is not a setting; did you mean data.partition?"),
        (["modle.width=8"], "modle is not a setting; did you mean model?"),
        (["~callbacks.progres"], "callbacks.progres is not a setting; did you mean callbacks.prog"),
        (["sfl.lr=0.1,0.2", "sfl.temprature=0.1,0.2"], "did you mean sfl.temperature?"),
        (["sfl.lr=range(1,3)", "sfl.num_clent=choice(1,2)"], "did you mean sfl.num_clients?"),
        (["sfl.foo=1"], "sfl.foo is not a setting (sfl has: client_batch_size"),
        (["sfl.foo=1"], "to add a new key use +sfl.foo=..."),
        (["data.synthetic.num_classes=3"], "data.synthetic is not a setting"),
    ],
)
def test_unknown_key_suggests_the_closest(overrides, message):
    found = suggest_key_typos(CONFIG_DIR, "train", overrides)
    assert found is not None and message in found, found


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sfl=legasy"], "did you mean sfl=legacy? Available options: fixed, legacy"),
        (["sfl=fixed,legasy"], "Could not find 'sfl/legasy'"),
        (["data=mnist"], "Could not find 'data/mnist'; Available options: cifar10, cifar100"),
        (["experiment=dem"], "did you mean experiment=demo?"),
    ],
)
def test_unknown_group_choice_lists_the_options(overrides, message):
    found = suggest_key_typos(CONFIG_DIR, "train", overrides)
    assert found is not None and message in found, found


@pytest.mark.parametrize(
    "config_name, overrides",
    [
        ("train", []),
        ("train", TINY),
        ("train", ["sfl=legacy,fixed", "sfl.lr=0.1,0.2", "sfl.queue_size=range(1024,4097,1024)"]),
        ("train", ["sfl.temperature=interval(0.05,0.5)", "seed=choice(1,2)"]),
        ("train", ["sfl.lr=tag(log, interval(0.003, 0.3))", "hparams_search=knn_optuna"]),
        ("train", ["+foo=1", "foo=2", "++bar.baz=3", "+sfl.extra=1"]),
        ("train", ["hydra.sweep.dir=/tmp/x", "hydra.run.dir=/tmp/y", "hydra/launcher=basic"]),
        ("train", ["experiment=taressfl_stage2", "init_from=/some/ckpt"]),
        ("train", ["experiment=demo,taressfl_stage2", "init_from=/some/ckpt"]),
        ("train", ["experiment=table3_c10_iid_100clients_cut1", "sfl=legacy", "paper.top1=1"]),
        ("train", ["~callbacks.progress", "~callbacks.knn", "~logger", "experiment=null"]),
        ("train", ["tags=[a,b]", "data=synthetic", "data.synthetic.num_classes=3"]),
        ("eval", ["eval=knn", "eval.k=5", "ckpt_path=/x"]),
        ("overhead", ["experiment=demo", "bytes_per_element=2"]),
    ],
)
def test_valid_overrides_pass_silently(config_name, overrides):
    assert suggest_key_typos(CONFIG_DIR, config_name, overrides) is None


def test_check_overrides_exits_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_overrides_or_exit("train", ["--cfg", "job", "sfl.num_clent=5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: sfl.num_clent is not a setting; did you mean sfl.num_clients?\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "sfl.lr=0.1,0.2", "hydra.sweep.dir=/tmp/x"],
        ["--multirun", "sfl=legacy,fixed"],
        ["--help"],
        ["--cfg", "job", "sfl.num_clients=3"],
        ["--config-dir", "/elsewhere", "something.else=1"],  # another config: Hydra's business
        ["--no-such-flag"],  # Hydra reports it
        ["sfl.lr="],  # an empty value is valid (null-like); Hydra decides
        [],
    ],
)
def test_check_overrides_leaves_the_rest_to_hydra(capsys, argv):
    check_overrides_or_exit("train", argv)
    assert capsys.readouterr().err == ""


def test_check_overrides_follows_the_config_name(capsys):
    with pytest.raises(SystemExit):
        check_overrides_or_exit("train", ["-cn", "eval", "eval=knnn"])
    assert "did you mean eval=knn?" in capsys.readouterr().err


def test_config_dir_is_the_repository_conf():
    assert Path(CONFIG_DIR) == Path(__file__).resolve().parents[1] / "conf"
