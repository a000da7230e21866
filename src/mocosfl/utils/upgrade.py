"""A checkpoint's run config in today's layout: every change of a setting's name or home since
checkpoints first stored their config, in one place, so that old checkpoints still evaluate,
attack and resume as they were trained."""

import copy
from typing import Any

from mocosfl.data.transforms import BLUR_BEFORE_CHOICE

# Once mirrored under data (data.num_clients: ${sfl.num_clients}, ...): the plan reads sfl's.
_DATA_MIRRORS = ("num_clients", "clients_per_step", "client_batch_size", "sync_every", "pool")


def upgrade_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` (a run config, resolved or not) in today's layout:

    * no ``data.blur``: the blur runs had before the setting existed (``kernel10``);
    * ``data.num_clients`` and the other mirrors of ``sfl.*``: dropped;
    * ``data.code_epoch_steps``: moved to ``sfl.code_epoch_steps`` (null when it had none);
    * ``callbacks.fedavg.every``: dropped (FedAvg follows the plan's rounds).
    """
    config = copy.deepcopy(config)
    data, sfl = config.setdefault("data", {}), config.setdefault("sfl", {})
    data.setdefault("blur", BLUR_BEFORE_CHOICE)
    for key in _DATA_MIRRORS:
        data.pop(key, None)
    sfl.setdefault("code_epoch_steps", data.pop("code_epoch_steps", None))
    fedavg = (config.get("callbacks") or {}).get("fedavg")
    if fedavg:
        fedavg.pop("every", None)
    return config
