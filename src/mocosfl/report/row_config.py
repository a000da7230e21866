"""A run's paper row, and whether the run has that row's settings.

A run counts toward a paper row only if it has the row's settings: its resolved config must
equal the one Hydra composes from ``conf/`` for ``experiment=<row> sfl=<its preset> seed=<its
seed>`` and nothing else, in the keys that decide the experiment (``COMPARED``: data, model, sfl,
module, the step/epoch budget and FedAvg), less ``IGNORED`` -- where the data lives and how it is
loaded, and the client engine (the same maths computed per client or stacked). Every other key
(paths, logger, seed, tags, num_threads, the progress bar and checkpoint callbacks, the trainer's
accelerator, devices and precision, ckpt_path) cannot make a run another experiment. A run whose
``experiment_name`` names no file in ``conf/experiment`` (set by hand) has no row config to check.

A row's runs carry its name in ``experiment_name``. ``conf/experiment/table_base.yaml`` sets it
to the run's ``experiment=`` choice, ``${hydra:runtime.choices.experiment}``, which
``config.yaml`` keeps unresolved and only Hydra's runtime resolves, so that name is read from the
choices in ``hydra.yaml``; a literal name (a run from before, or one set by hand) is read as it
is.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from mocosfl.utils.run import CONFIG_DIR
from mocosfl.utils.upgrade import upgrade_run_config

# A row's experiment_name as conf/experiment/table_base.yaml sets it, kept so in config.yaml.
FROM_CHOICE = "${hydra:runtime.choices.experiment}"
# The keys (with everything under them) that make a run the row's experiment, and those among
# them that do not change it: where the data lives and how it is loaded or batched for
# evaluation, and the client engine (loop or vmap: the same update computed two ways).
COMPARED = (
    "data",
    "model",
    "sfl",
    "module",
    "trainer.max_steps",
    "trainer.max_epochs",
    "callbacks.fedavg",
)
IGNORED = (
    "data.root",
    "data.download",
    "data.num_workers",
    "data.eval_batch_size",
    "sfl.client_engine",
    "module.client_engine",
    "sfl.variant",  # what the run is reported as, not how it trains
)
ABSENT = "(absent)"


def _leaves(cfg: DictConfig, key: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, resolved value) of every leaf under ``key``; a list is one leaf.

    Resolved one key at a time, so that a value only Hydra's runtime can resolve (``${hydra:..}``)
    reads as None instead of failing the whole comparison.
    """
    value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    if isinstance(value, DictConfig):
        for child in value:
            yield from _leaves(cfg, f"{key}.{child}")
    elif isinstance(value, ListConfig):
        try:
            yield key, OmegaConf.to_container(value, resolve=True)
        except Exception:
            yield key, OmegaConf.to_container(value, resolve=False)
    else:
        yield key, value


def compared_settings(cfg: DictConfig) -> dict[str, Any]:
    """The resolved values of the COMPARED keys of ``cfg``, less the IGNORED ones."""
    return {
        key: value
        for compared in COMPARED
        for key, value in _leaves(cfg, compared)
        if not any(key == ignored or key.startswith(f"{ignored}.") for ignored in IGNORED)
    }


def compose_train(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, outside Hydra's runtime (unresolved)."""
    # Restores any Hydra instance of the caller (a test, a notebook) on exit.
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


@functools.cache
def row_settings(experiment: str, preset: str, seed: int) -> dict[str, Any]:
    """The settings of the row ``experiment`` as ``conf/`` composes it for this preset and seed."""
    return compared_settings(
        compose_train([f"experiment={experiment}", f"sfl={preset}", f"seed={seed}"])
    )


def experiment_name(cfg: DictConfig, choices: DictConfig | dict) -> str | None:
    """The name the run is grouped under: a row's ``experiment=`` choice where its
    ``experiment_name`` is ``FROM_CHOICE``, else that name resolved within the run's config (a
    literal one, or one that interpolates the run's keys); None when it has none (not a paper
    row, or a base config's missing name)."""
    if OmegaConf.to_container(cfg).get("experiment_name") == FROM_CHOICE:
        return choices.get("experiment")
    name = OmegaConf.select(cfg, "experiment_name", throw_on_resolution_failure=False)
    return str(name) if name else None


def row_name(cfg: DictConfig, choices: DictConfig | dict) -> str | None:
    """The row config the run claims: its ``experiment=`` choice, else a row file named like its
    ``experiment_name``; None when it has neither (a name set by hand)."""
    return choices.get("experiment") or experiment_name(cfg, choices)


def differences(run: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """``key: run value vs row value`` for every key whose values differ, in the row's order."""
    keys = [*row, *(key for key in run if key not in row)]
    return [
        f"{key}: {run.get(key, ABSENT)} vs {row.get(key, ABSENT)}"
        for key in keys
        if run.get(key, ABSENT) != row.get(key, ABSENT)
    ]


def check_row(cfg: DictConfig, choices: DictConfig | dict, seed: int) -> list[str]:
    """How the run's settings differ from its row's (empty: it has the paper's settings)."""
    name = row_name(cfg, choices)
    if name is None or not (Path(CONFIG_DIR) / "experiment" / f"{name}.yaml").is_file():
        if choices.get("experiment"):  # the row's file is gone: nothing says what it set
            return [f"experiment: {name} vs (no conf/experiment/{name}.yaml)"]
        return []
    try:
        row = row_settings(name, str(choices.get("sfl", "default")), seed)
    except HydraException as exc:  # e.g. an sfl preset that no longer exists
        return [f"row config: {str(exc).splitlines()[0]}"]
    # A run from an older layout is compared as today's configs write the same settings.
    current = OmegaConf.create(upgrade_run_config(OmegaConf.to_container(cfg)))
    return differences(compared_settings(current), row)
