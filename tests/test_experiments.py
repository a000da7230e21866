"""The reproduction pack: one experiment config per paper row, each with the row's settings.

Every config composes and builds its data module (constructor and settings checks, no data) and
its model; every MocoSFL row has the settings of docs/paper.md (Cross-client settings) fixed, with
`sfl=legacy` and with `sfl=legacy sizing=auto_adjust`, and its numbers from conf/paper/numbers.yaml:
every row config has an entry there and every entry a config. The FL-SSL baseline rows of Table 2
(`module=flmoco|fedbyol|fedema`) have EasyFL's settings on the project's clock (docs/paper.md,
FL-SSL baselines) and the client data of the MocoSFL rows they stand beside.
"""

import math
import re
from pathlib import Path

import hydra
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from mocosfl.config import validate_config
from mocosfl.data import build_datamodule
from mocosfl.sfl.schedules import LRSchedule
from mocosfl.utils.resolvers import auto_client_batch, auto_clients_per_step, paper_numbers

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "conf" / "experiment"
CONFIGS = sorted(
    p.stem for p in [*EXPERIMENTS.glob("table*.yaml"), *EXPERIMENTS.glob("other_archs*.yaml")]
)
ROWS = [name for name in CONFIGS if not name.startswith("table_base")]
# Table 2's FL-SSL baselines: FedAvg of whole models, named by their method instead of a cut.
FLSSL_ROW = re.compile(
    r"table2_(?P<data>c10|c100)_noniid_(?P<clients>5|20)clients_(?P<method>flmoco|fedbyol|fedema)"
)
FLSSL_ROWS = [name for name in ROWS if FLSSL_ROW.fullmatch(name)]
MOCOSFL_ROWS = [name for name in ROWS if name not in FLSSL_ROWS]
# (sfl, sizing): a row sets every value that sizing=auto_adjust would.
PRESETS = (("fixed", "manual"), ("legacy", "manual"), ("legacy", "auto_adjust"))

# docs/paper.md (Cross-client settings), per number of clients: (clients a round, images per
# client and step, FedAvg every n steps, the original's code epochs = T_max of its client cosine).
CLIENT_SETTINGS = {
    5: (5, 20, 50, 200),
    20: (5, 20, 12, 800),
    100: (100, 1, 50, 200),
    200: (100, 1, 50, 400),
    1000: (100, 1, 50, 2000),
}
SET_BY_HAND = {20}  # Table 2's 20-client scripts pass batch, ratio and avg_freq themselves
DATA = {"c10": ("cifar10", 10), "c100": ("cifar100", 100), "imagenet12": ("imagefolder", 12)}
PAPER_DATASETS = {"c10": "cifar10", "c100": "cifar100", "imagenet12": "imagenet12"}
# The keys of an entry of conf/paper/numbers.yaml: every row's, and those only some rows have.
PAPER_KEYS = {"label", "table", "dataset", "top1"}
OPTIONAL_PAPER_KEYS = {"top1_std", "attack_mse", "attack_mse_std", "method", "missing"}
ROW_NAME = re.compile(
    r"(?P<table>table[234]|other_archs)_(?:(?P<arch>vgg13|mobilenetv2)_)?(?P<data>c10|c100|"
    r"imagenet12)_(?:(?P<partition>iid|noniid)_)?(?P<clients>\d+)clients_cut(?P<cut>[12])"
    r"(?:_target\w+)?"
)


def test_every_row_config_has_paper_numbers_and_every_entry_a_config():
    numbers = set(paper_numbers())
    assert set(ROWS) - numbers == set(), "row configs without an entry in conf/paper/numbers.yaml"
    assert numbers - set(ROWS) == set(), "entries of conf/paper/numbers.yaml without a row config"


def test_paper_numbers_have_the_known_keys():
    # A misspelt key would read as a number the paper does not give (None).
    allowed = PAPER_KEYS | OPTIONAL_PAPER_KEYS
    wrong = {
        name: sorted(entry)
        for name, entry in paper_numbers().items()
        if not PAPER_KEYS <= set(entry) <= allowed
    }
    assert wrong == {}


def compose_row(compose_train, name: str, *overrides: str):
    cfg = compose_train([f"experiment={name}", *overrides])
    if OmegaConf.is_missing(cfg.data, "root"):
        cfg.data.root = "/dataset/supplied/by/the/user"  # ImageNet-12 rows: data.root: ???
    return cfg


@pytest.mark.parametrize("name", CONFIGS)
def test_config_composes_and_builds_data_module_and_model(compose_train, name):
    cfg = compose_row(compose_train, name)
    datamodule = build_datamodule(cfg)  # every check that needs no data (setup() would load it)
    model = hydra.utils.instantiate(cfg.model)
    assert model.cut_layer == cfg.sfl.cut_layer
    assert datamodule.image_size == cfg.data.image_size


@pytest.mark.parametrize("name", MOCOSFL_ROWS)
def test_row_has_the_tabulated_settings_fixed_and_as_published(compose_train, name):
    row = ROW_NAME.fullmatch(name)
    assert row, f"{name} does not follow the naming scheme"
    clients, cut = int(row["clients"]), int(row["cut"])
    pool, batch, sync_every, code_epochs = CLIENT_SETTINGS[clients]
    data_name, num_classes = DATA[row["data"]]
    sfl_by_preset = {}
    for preset, sizing in PRESETS:
        cfg = compose_row(compose_train, name, f"sfl={preset}", f"sizing={sizing}")
        sfl = cfg.sfl
        assert (sfl.num_clients, sfl.clients_per_step, sfl.client_batch_size) == (
            clients,
            pool,
            batch,
        )
        assert sfl.clients_per_step * sfl.client_batch_size == 100  # the paper's server batch
        assert (sfl.sync_every, sfl.legacy_client_period) == (sync_every, code_epochs)
        if clients not in SET_BY_HAND:
            assert batch == auto_client_batch(clients)
            assert pool == auto_clients_per_step(clients)
        assert sfl.cut_layer == cut
        # The preset still decides the behaviour: a row sets only its own settings.
        legacy = preset == "legacy"
        assert sfl.loss == ("legacy_sum" if legacy else "two_way")
        assert sfl.fedavg_weights == ("uniform" if legacy else "data")
        assert sfl.sync_momentum is not legacy
        assert (cfg.trainer.max_steps, cfg.trainer.max_epochs) == (100000, -1)
        assert cfg.experiment_name == name
        assert cfg.logger.wandb.group == f"{name}-{preset}"
        assert {"paper", row["table"], f"{clients}clients", f"cut{cut}", preset} <= set(cfg.tags)
        sfl_by_preset[preset, sizing] = OmegaConf.to_container(sfl, resolve=True)

        assert cfg.data.name == data_name
        if row["partition"] == "noniid":
            # int(0.2 * classes) classes a client (docs/paper.md, Data)
            assert cfg.data.partition == "shards"
            assert cfg.data.classes_per_client == int(0.2 * num_classes)
        else:
            assert cfg.data.partition == "iid"
        assert cfg.data.image_size == (224 if row["data"] == "imagenet12" else 32)
        assert cfg.model.arch == (row["arch"] or "resnet18")
        assert cfg.paper.table == row["table"]
        assert cfg.paper.dataset == PAPER_DATASETS[row["data"]]
        if row["table"] == "other_archs":
            assert cfg.paper.top1 is None  # in the paper's appendix, which was not available
        else:
            assert 50.0 < cfg.paper.top1 < 100.0
    assert sfl_by_preset["legacy", "manual"] == sfl_by_preset["legacy", "auto_adjust"]


@pytest.mark.parametrize("name", [n for n in ROWS if n.startswith("table4")])
def test_table4_rows_chain_onto_a_stage1_expert_and_attack(compose_train, name):
    cfg = compose_row(compose_train, name)
    assert cfg.task_name == "taressfl_stage2" and "init_from" in cfg and cfg.init_from is None
    share = {"0pct": 0.0, "0p5pct": 0.005, "1pct": 0.01}[name.rsplit("_target", 1)[1]]
    assert cfg.expert_target_fraction == share
    assert cfg.model.bottleneck == "C4S2"
    assert (cfg.sfl.lr, cfg.sfl.client_lr) == (0.001, 0.0)
    assert cfg.callbacks.attack._target_ == "mocosfl.callbacks.AttackCallback"
    assert cfg.paper.attack_mse is not None


@pytest.mark.parametrize(
    "name, lr",
    [
        ("other_archs_vgg13_c10_iid_100clients_cut2", 0.03),
        ("other_archs_vgg13_c10_noniid_100clients_cut2", 0.02),
        ("other_archs_mobilenetv2_c10_iid_100clients_cut2", 0.03),
        ("other_archs_mobilenetv2_c10_noniid_100clients_cut2", 0.03),
    ],
)
def test_other_architectures_use_the_scripts_learning_rates(compose_train, name, lr):
    cfg = compose_row(compose_train, name)
    assert cfg.sfl.lr == lr
    assert cfg.sfl.client_optimizer.lr == lr  # the client lr follows the server's


# -- Table 2's FL-SSL baselines ----------------------------------------------------------------
CIFAR_TRAIN_IMAGES = 50_000
# EasyFL's applications/fedssl defaults (main.py): batch, local epochs, rounds, learning rate.
EASYFL = {"batch": 128, "local_epochs": 5, "rounds": 100, "lr": 0.032}
# The paper's Table 2, FL-BYOL (Zhuang et al. 2022): linear top-1 (%) by data set and clients.
FL_BYOL = {("c10", 5): 83.34, ("c10", 20): 75.77, ("c100", 5): 61.78, ("c100", 20): 52.78}
TARGETS = {
    "flmoco": "mocosfl.flssl.FLMoCo",
    "fedbyol": "mocosfl.flssl.FedBYOL",
    "fedema": "mocosfl.flssl.FedEMA",
}


@pytest.mark.parametrize("name", FLSSL_ROWS)
def test_flssl_row_has_easyfl_settings_on_one_clock(compose_train, name):
    row = FLSSL_ROW.fullmatch(name)
    clients, method = int(row["clients"]), row["method"]
    cfg = compose_row(compose_train, name)
    validate_config(cfg)  # what the command line checks first
    assert HydraConfig.get().runtime.choices.module == method
    assert cfg.module._target_ == TARGETS[method]
    datamodule = build_datamodule(cfg)
    plan = datamodule.plan
    # All clients every round, each taking one local step of its own 128 images a step.
    assert (plan.num_clients, plan.clients_per_step) == (clients, clients)
    assert plan.client_batch_size == EASYFL["batch"]
    assert plan.server_batch_size == clients * EASYFL["batch"]
    # A round is 5 local epochs over a client's share at batch 128 without the short last batch
    # (drop_last); the budget is 100 rounds.
    _, client_images = datamodule.settings.split_sizes(CIFAR_TRAIN_IMAGES)
    assert client_images == 45_000  # 5,000 held out for validation, as in the MocoSFL rows
    local_epoch = (client_images // clients) // EASYFL["batch"]
    assert plan.sync_every == EASYFL["local_epochs"] * local_epoch
    assert cfg.trainer.max_steps == EASYFL["rounds"] * plan.sync_every
    assert cfg.trainer.max_epochs == -1
    assert plan.pool == "round" and plan.syncs_in_run(cfg.trainer.max_steps) == EASYFL["rounds"]
    # Cosine decay by round: one rate a round, 0.5 x (1 + cos(pi x round / 100)) x 0.032.
    assert cfg.sfl.client_optimizer.lr == EASYFL["lr"]
    schedule = LRSchedule(cfg.sfl.client_schedule)
    for round_ in (0, 1, 50, 99):
        expected = 0.5 * (1 + math.cos(math.pi * round_ / EASYFL["rounds"]))
        for step in (round_ * plan.sync_every, (round_ + 1) * plan.sync_every - 1):
            factor = schedule.factor(step, cfg.trainer.max_steps, plan.code_epoch_steps)
            assert factor == pytest.approx(expected)
    optimizer = cfg.sfl.client_optimizer
    assert (optimizer.momentum, optimizer.weight_decay) == (0.9, 5.0e-4)
    assert cfg.sfl.ema_decay == 0.99
    assert (cfg.model.arch, cfg.model.norm, cfg.model.weight_std) == ("resnet18", "bn", False)
    # Reported as its method: a method tag instead of a cut, the paper's number where it has one.
    assert cfg.experiment_name == name
    assert cfg.logger.wandb.group == f"{name}-fixed"
    assert list(cfg.tags) == [
        "paper", "table2", cfg.paper.dataset, "shards", f"{clients}clients", method, "fixed"
    ]  # fmt: skip
    assert cfg.paper.method == method and cfg.paper.table == "table2"
    assert cfg.paper.top1 == (None if method == "flmoco" else FL_BYOL[row["data"], clients])
    # The client data of the MocoSFL rows of the same data and clients: the same partition.
    data = OmegaConf.to_container(cfg.data, resolve=True)
    mocosfl = compose_row(compose_train, f"table2_{row['data']}_noniid_{clients}clients_cut1")
    assert data == OmegaConf.to_container(mocosfl.data, resolve=True)


@pytest.mark.parametrize("name", [n for n in FLSSL_ROWS if n.endswith("flmoco")])
def test_flmoco_rows_use_easyfl_moco_v2(compose_train, name):
    cfg = compose_row(compose_train, name)
    # model.py: MoCoModel(K=4096, dim=128, mlp hidden = feature dim 512), T = 0.2 for moco_v2.
    assert (cfg.module.queue_size, cfg.module.temperature) == (4096, 0.2)
    assert (cfg.module.head_hidden_dim, cfg.module.head_out_dim) == (512, 128)
    assert cfg.module.loss == "two_way"


@pytest.mark.parametrize("name", [n for n in FLSSL_ROWS if n.endswith(("fedbyol", "fedema"))])
def test_byol_rows_use_easyfl_byol(compose_train, name):
    cfg = compose_row(compose_train, name)
    # model.py BYOLModel: projector and predictor 2048 out, 4096 hidden; both directions summed.
    assert (cfg.module.head_hidden_dim, cfg.module.head_out_dim) == (4096, 2048)
    assert cfg.module.predictor_hidden_dim == 4096
    assert cfg.module.loss == "two_way" and cfg.module.ema_decay == 0.99
    if name.endswith("fedema"):  # README: FedEMA with the auto scaler, tau = 0.7
        assert (cfg.module.scaler_target, cfg.module.weight_scaler) == (0.7, None)


def test_flssl_rows_are_every_method_data_set_and_client_count():
    assert len(FLSSL_ROWS) == 12
    by_method = {method: [n for n in FLSSL_ROWS if n.endswith(method)] for method in TARGETS}
    assert all(len(names) == 4 for names in by_method.values())
    numbers = paper_numbers()
    for name in FLSSL_ROWS:
        assert numbers[name]["method"] == FLSSL_ROW.fullmatch(name)["method"]
        assert "Table 2" in numbers[name]["label"]
    assert {numbers[n]["missing"] for n in by_method["flmoco"]} == {"not in the paper"}
