"""Checkpoints whose run config has an older layout still load, evaluate and resume exactly."""

import copy
from pathlib import Path

import torch

from mocosfl.api import load_checkpoint, load_datamodule
from mocosfl.train import train
from mocosfl.utils.upgrade import upgrade_run_config

from helpers import TINY, flat_state

MIRRORS = {
    "num_clients": "${sfl.num_clients}",
    "clients_per_step": "${sfl.clients_per_step}",
    "client_batch_size": "${sfl.client_batch_size}",
    "sync_every": "${sfl.sync_every}",
    "pool": "${sfl.pool}",
}
SYMMETRIC_OF_LOSS = {"two_way": "true", "one_way": "off", "legacy_sum": "legacy"}


def old_layout(config: dict, resolved: bool) -> dict:
    """``config`` as checkpoints stored it before the federated plan: the sfl settings mirrored
    under data, the code epoch a data setting, FedAvg's interval its own, no data.blur and no
    data.eval_train_images, the loss mode as sfl.symmetric and the kNN feature as
    sfl.eval_feature."""
    old = copy.deepcopy(config)
    sfl = old["sfl"]
    old["data"].update(
        {k: sfl[k] for k in MIRRORS} if resolved else MIRRORS,
        code_epoch_steps=sfl.pop("code_epoch_steps"),
    )
    del old["data"]["blur"]
    old["data"].pop("eval_train_images", None)
    old["callbacks"]["fedavg"]["every"] = sfl["sync_every"] if resolved else "${sfl.sync_every}"
    sfl["symmetric"] = SYMMETRIC_OF_LOSS[sfl.pop("loss")]
    if "module" in old:
        module = old["module"]
        module["symmetric"] = (
            SYMMETRIC_OF_LOSS[module.pop("loss")] if resolved else "${sfl.symmetric}"
        )
    knn = old["callbacks"].get("knn")
    if knn:
        sfl["eval_feature"] = knn["feature"]
        knn["feature"] = knn["feature"] if resolved else "${sfl.eval_feature}"
    return old


def test_upgrade_moves_every_old_key_and_leaves_its_input_alone():
    new = {
        "data": {"name": "synthetic", "blur": "pil", "eval_train_images": None},
        "sfl": {"num_clients": 4, "sync_every": 3, "code_epoch_steps": 7, "loss": "legacy_sum"},
        "module": {"loss": "legacy_sum"},
        "callbacks": {"fedavg": {"sync_momentum": True}, "knn": {"feature": "head"}},
    }
    new["sfl"].update(clients_per_step=2, client_batch_size=4, pool="epoch")
    old = old_layout(new, resolved=True)
    before = copy.deepcopy(old)
    upgraded = {"name": "synthetic", "blur": "kernel10", "eval_train_images": None}
    assert upgrade_run_config(old) == {**new, "data": upgraded}
    assert old == before
    assert upgrade_run_config(new) == new  # today's layout stays as it is


def test_an_old_layout_checkpoint_evaluates_and_resumes_exactly(compose_train, tmp_path):
    """4 steps of the legacy preset (one pool per code epoch of 3 steps, set explicitly), then
    2 more from the checkpoint as written and from the same checkpoint in the old layout."""
    common = [*TINY, "sfl=legacy", "sfl.code_epoch_steps=3", "~callbacks.knn"]
    common += ["~callbacks.linear_probe", "data.blur=kernel10"]
    first = compose_train([*common, "trainer.max_steps=4"])
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["run_config"] = old_layout(ckpt["run_config"], resolved=True)
    source = ckpt["run_source"]["config"]
    ckpt["run_source"]["config"] = old_layout(source, resolved=False)
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)

    assert load_checkpoint(old)["run_config"] == load_checkpoint(last)["run_config"]
    datamodule = load_datamodule(old)
    assert datamodule.plan.code_epoch_steps == 3 and datamodule.plan.pool == "epoch"

    ends = {}
    for name, path in (("as written", last), ("old layout", old)):
        resumed = compose_train([*common, "trainer.max_steps=6", f"ckpt_path={path}"])
        resumed.paths.output_dir = str(tmp_path / name)
        assert train(resumed)["global_step"] == 6
        ends[name] = flat_state(tmp_path / name / "checkpoints" / "last.ckpt")
    for key, value in ends["as written"].items():
        assert torch.equal(ends["old layout"][key], value), key
