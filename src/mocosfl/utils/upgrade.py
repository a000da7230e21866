"""A checkpoint's run config in today's layout: every change of a setting's name or home since
checkpoints first stored their config, in one place, so that old checkpoints still evaluate,
attack and resume as they were trained."""

import copy
from typing import Any

from mocosfl.data.blur import BLUR_BEFORE_CHOICE

# Once mirrored under data (data.num_clients: ${sfl.num_clients}, ...): the plan reads sfl's.
_DATA_MIRRORS = ("num_clients", "clients_per_step", "client_batch_size", "sync_every", "pool")
# sfl.symmetric (YAML may have read `true` as a bool) became sfl.loss.
_LOSS_OF_SYMMETRIC = {
    "true": "two_way",
    "false": "one_way",
    "off": "one_way",
    "legacy": "legacy_sum",
}


def _loss_of(symmetric: Any) -> Any:
    """The ``loss`` value of an old ``symmetric`` one; a link (``${sfl.symmetric}``) follows."""
    if isinstance(symmetric, str) and symmetric.startswith("${"):
        return symmetric.replace("symmetric", "loss")
    return _LOSS_OF_SYMMETRIC[str(symmetric).lower()]


def upgrade_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` (a run config, resolved or not) in today's layout:

    * no ``data.blur``: the blur runs had before the setting existed (``kernel10``);
    * no ``data.eval_train_images``: null (evaluation read every training image);
    * ``data.num_clients`` and the other mirrors of ``sfl.*``: dropped;
    * ``data.code_epoch_steps``: moved to ``sfl.code_epoch_steps`` (null when it had none);
    * ``callbacks.fedavg.every``: dropped (FedAvg follows the plan's rounds);
    * ``sfl.symmetric`` / ``module.symmetric`` (true, off, legacy): ``loss`` (two_way,
      one_way, legacy_sum);
    * ``sfl.eval_feature``: moved to ``callbacks.knn.feature``.
    """
    config = copy.deepcopy(config)
    data, sfl = config.setdefault("data", {}), config.setdefault("sfl", {})
    data.setdefault("blur", BLUR_BEFORE_CHOICE)
    data.setdefault("eval_train_images", None)
    for key in _DATA_MIRRORS:
        data.pop(key, None)
    sfl.setdefault("code_epoch_steps", data.pop("code_epoch_steps", None))
    for group in (sfl, config.get("module") or {}):
        if "symmetric" in group:
            group["loss"] = _loss_of(group.pop("symmetric"))
    callbacks = config.get("callbacks") or {}
    if callbacks.get("fedavg"):
        callbacks["fedavg"].pop("every", None)
    feature = sfl.pop("eval_feature", None)
    knn = callbacks.get("knn")
    if knn and feature is not None and str(knn.get("feature")).startswith("${"):
        knn["feature"] = feature
    return config
