"""The rows of ``benchmarks/study.py``: each method setting as ``mocosfl.train`` overrides, the
settings every row shares, and the in-process check that every row composes and validates.

Every row processes 100 images a step (the pool times the client batch), so the same step budget
is the same number of images for every method. Only this file says what a row is; ``study.py``
runs them and ``_study_report.py`` reports them.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

SEEDS = (1234, 1235, 1236)  # the project's seeds (conf/experiment/table_base.yaml)
IMAGES_PER_STEP = 100
NONIID = ("data.partition=shards", "data.classes_per_client=2")  # the paper's 2 classes a client
# FedBYOL / FedEMA heads at this width's scale (tests/test_learning.py BYOL_HEADS): EasyFL's
# 4096/2048 would be most of a CPU step.
BYOL_HEADS = (
    "module.head_hidden_dim=512",
    "module.head_out_dim=128",
    "module.predictor_hidden_dim=512",
)
# FL-MoCo's head and per-client queue at EasyFL's MoCo v2 sizes (conf/experiment/
# table_base_flmoco.yaml): with the default 1024/1024 head, 100 clients each holding a whole
# network, its momentum copy, SGD buffers and a 6000 x 1024 queue peaked at 9.6 GB in one process
# (3.6 GB with these heads); both FL-MoCo rows use them, so they compare with each other.
FLMOCO_HEADS = ("module.head_hidden_dim=512", "module.head_out_dim=128")


def clients(num: int, pool: int, batch: int) -> tuple[str, ...]:
    assert pool * batch == IMAGES_PER_STEP, "every row processes the same images a step"
    return (
        f"sfl.num_clients={num}",
        f"sfl.clients_per_step={pool}",
        f"sfl.client_batch_size={batch}",
    )


@dataclass(frozen=True)
class Row:
    """One method setting: ``overrides`` of ``mocosfl.train``, ``seeds`` how many seeds it runs,
    ``split`` False for the centralized reference, whose client costs are not a client's."""

    title: str
    overrides: tuple[str, ...]
    seeds: int = 2
    split: bool = True

    @property
    def family(self) -> str:
        """mocosfl, legacy, fl-ssl or centralized (the line style of the plot)."""
        if not self.split:
            return "centralized"
        if "sfl=legacy" in self.overrides:
            return "legacy"
        return "fl-ssl" if any(o.startswith("module=") for o in self.overrides) else "mocosfl"


# One image a client: the vmap engine (measured faster than loop at 100 and 1000 clients, see
# study.py); 5 clients of 20 images: loop (as README's engine comparison finds at 10 of 10).
VMAP = ("sfl.client_engine=vmap",)
ROWS: dict[str, Row] = {
    "centralized": Row("MoCo, centralized (1 client, batch 100)", clients(1, 1, 100), 3, False),
    "mocosfl1_5c_noniid": Row("MocoSFL-1, 5 clients non-IID", (*clients(5, 5, 20), *NONIID)),
    "mocosfl1_100c_iid": Row("MocoSFL-1, 100 clients IID", (*clients(100, 100, 1), *VMAP)),
    "mocosfl1_100c_noniid": Row(
        "MocoSFL-1, 100 clients non-IID", (*clients(100, 100, 1), *NONIID, *VMAP), 3
    ),
    "mocosfl1_1000c_noniid": Row(
        "MocoSFL-1, 1000 clients (100 a round) non-IID",
        (*clients(1000, 100, 1), *NONIID, *VMAP),
    ),
    "mocosfl3_100c_noniid": Row(
        "MocoSFL-3 (cut 2), 100 clients non-IID",
        ("sfl.cut_layer=2", *clients(100, 100, 1), *NONIID, *VMAP),
    ),
    # sfl=legacy (plain-mean FedAvg, unsynchronised momentum copies, one pool per code epoch,
    # the original's client and server schedules and stem) on the 100-client non-IID row. Two of
    # its settings are put back: the one-way loss of every row (legacy_sum would cost a second
    # server pass an image, so the same images would not be the same compute) and the kNN on
    # the backbone feature (legacy's head feature would measure another quantity).
    "legacy_100c_noniid": Row(
        "MocoSFL-1 legacy, 100 clients non-IID",
        ("sfl=legacy", *clients(100, 100, 1), *NONIID, *VMAP)
        + ("sfl.loss=one_way", "callbacks.knn.feature=backbone"),
    ),
    "flmoco_5c_noniid": Row(
        "FL-MoCo, 5 clients non-IID",
        ("module=flmoco", *clients(5, 5, 20), *NONIID, *FLMOCO_HEADS),
        3,
    ),
    "fedbyol_5c_noniid": Row(
        "FedBYOL, 5 clients non-IID", ("module=fedbyol", *clients(5, 5, 20), *NONIID, *BYOL_HEADS)
    ),
    "fedema_5c_noniid": Row(
        "FedEMA, 5 clients non-IID", ("module=fedema", *clients(5, 5, 20), *NONIID, *BYOL_HEADS)
    ),
    # 100 clients of 480 images (48,000 / 100), 5 of them a round at batch 20: the same 100
    # images a step. BYOL's BatchNorm heads refuse a batch of 1, so the FL-SSL rows cannot have
    # MocoSFL's 100 clients of one image a step; 5 clients a round is FL's partial participation
    # (EasyFL's clients_per_round) at the 5-client rows' local batch.
    "flmoco_100c_noniid": Row(
        "FL-MoCo, 100 clients (5 a round) non-IID",
        ("module=flmoco", *clients(100, 5, 20), *NONIID, *FLMOCO_HEADS),
    ),
    "fedbyol_100c_noniid": Row(
        "FedBYOL, 100 clients (5 a round) non-IID",
        ("module=fedbyol", *clients(100, 5, 20), *NONIID, *BYOL_HEADS),
    ),
}


@dataclass(frozen=True)
class Settings:
    """What every row of one study shares: the data, the network width and the budget."""

    root: str  # CIFAR-10 image folder (train/, test/); ignored when synthetic
    width: int
    steps: int
    points: int = 4  # val kNN points: every steps // points steps (the last at the end)
    sync_every: int = 10
    val_images: int = 2000  # the curve's queries and the probe's epoch choice
    eval_train_images: int | None = 5000
    max_train_images: int | None = None
    synthetic: bool = False

    def common(self) -> list[str]:
        """The overrides of every row: cifar10_quick's CPU settings (1 thread, CSV logger, no
        workers, one-way loss) on all of CIFAR-10, the kNN curve, an end-of-run linear probe."""
        if self.synthetic:  # the same code path on generated images (smoke tests)
            train = (self.max_train_images or 2400) + self.val_images
            data = ["data=synthetic", "data.image_size=16", f"data.synthetic.train_size={train}"]
            data.append("data.synthetic.test_size=200")
        else:
            data = ["data=imagefolder", f"data.root={self.root}"]
        every = max(1, self.steps // self.points)
        return [
            *data,
            f"data.max_train_images={none(self.max_train_images)}",
            f"data.val_images={self.val_images}",
            f"data.eval_train_images={none(self.eval_train_images)}",
            "data.num_workers=0",
            "trainer=cpu",
            "logger=csv",
            "num_threads=1",
            f"model.width={self.width}",
            "sfl.loss=one_way",
            f"sfl.sync_every={self.sync_every}",
            f"trainer.max_steps={self.steps}",
            "callbacks.knn.every_n_epochs=0",
            f"callbacks.knn.every_n_steps={every}",
            "callbacks.linear_probe.every_n_epochs=0",  # at the end only, the default cheap probe
            "callbacks.progress.every_n_steps=25",
            "~callbacks.checkpoint",  # last.ckpt of 100 whole FL clients is hundreds of MB
        ]


def none(value: int | None) -> str:
    return "null" if value is None else str(value)


def seeds_of(row: Row, scale: float) -> list[int]:
    """The row's seeds, scaled (at least 1)."""
    count = max(1, min(len(SEEDS), math.floor(row.seeds * scale + 0.5)))
    return list(SEEDS[:count])


def select(names: list[str] | None) -> dict[str, Row]:
    """The rows named (all when None), in the study's order; a bad name is a one-line error."""
    if not names:
        return dict(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown row {', '.join(unknown)}; the rows: {', '.join(ROWS)}")
    return {n: ROWS[n] for n in ROWS if n in names}


def run_overrides(settings: Settings, row: Row, seed: int) -> list[str]:
    """The command-line overrides of one run (a row's own come last, so they win)."""
    return [*settings.common(), *row.overrides, f"seed={seed}"]


def compose(settings: Settings, row: Row, seed: int) -> DictConfig:
    """The config of one run as ``mocosfl.train`` composes it (its output in a scratch folder)."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from mocosfl.utils.run import CONFIG_DIR

    out = f"paths.output_dir={Path(tempfile.gettempdir()) / 'mocosfl-study-check'}"
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return hydra.compose("train", [*run_overrides(settings, row, seed), out])
    finally:
        GlobalHydra.instance().clear()


def check_rows(settings: Settings, rows: dict[str, Row]) -> None:
    """Compose every row's config in-process and check it as ``mocosfl.train`` would before
    building anything (types, ranges, data settings, the plan): a bad row stops the study in
    one line before any training."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mocosfl.config import validate_config
    from mocosfl.data import build_datamodule
    from mocosfl.errors import ConfigError
    from mocosfl.train import check_config

    for name, row in rows.items():
        try:
            cfg = compose(settings, row, SEEDS[0])
            validate_config(cfg)
            check_config(cfg)
            build_datamodule(cfg)  # the data settings and the federated plan, nothing loaded
        except (ConfigError, HydraException, OmegaConfBaseException) as exc:
            message = str(exc).strip().splitlines()[0]
            raise SystemExit(f"error: row {name} does not compose: {message}") from None
