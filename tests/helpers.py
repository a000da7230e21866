"""Test helpers: the tiny configs most tests start from, configs composed as Hydra would compose
them, checkpoints flattened for exact comparison, the entry point in a fresh process, the
notebook kernel registered inside the project's environment, and notebooks run on it."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "mocosfl"

# A run of seconds on synthetic data: the base of most tests' configs.
TINY = [
    "data=synthetic",
    "data.image_size=16",
    "data.val_images=16",
    "data.synthetic.train_size=64",
    "data.synthetic.test_size=32",
    "data.num_workers=0",
    "model.width=8",
    "module.head_hidden_dim=32",
    "module.head_out_dim=16",
    "trainer=cpu",
    "logger=csv",
    "~callbacks.progress",
    "sfl.num_clients=4",
    "sfl.clients_per_step=2",
    "sfl.client_batch_size=4",
    "sfl.sync_every=3",
    "sfl.queue_size=40",
    "num_threads=1",
]  # 48 training images at a server batch of 8: 6 steps an epoch, rounds of 3 steps

ONE_CLIENT = ["sfl.num_clients=1", "sfl.clients_per_step=1"]
# Target: classes 0-4 of the data set; auxiliary: its classes 5-9 (no CIFAR-100 offline).
CLASS_SPLIT = [
    "data.target_classes=[0,1,2,3,4]",
    "data.aux.name=null",
    "data.aux.classes=[5,6,7,8,9]",
]
STAGE1 = [
    *(o for o in TINY if not o.startswith(("sfl.num_clients", "sfl.clients_per_step"))),
    "experiment=taressfl_stage1",
    *ONE_CLIENT,
    *CLASS_SPLIT,
    "sfl.cut_layer=1",
    "data.target_fraction=0.5",
    "data.aux.batch_size=4",
    "module.simulator_width=8",
    "module.simulator_blocks=1",
    "~callbacks.knn",
    "~callbacks.linear_probe",
    "trainer.max_epochs=2",
]  # 24 target-class training images, half of them the expert's, 4 + 4 images a step


def compose(config_name: str, out_dir: Path, overrides: list[str]) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, writing into ``out_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import mocosfl  # noqa: F401  (resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.root_dir = str(ROOT)
        del cfg.hydra
    return cfg


def compose_attack(out_dir: Path, overrides: list[str]) -> DictConfig:
    """The attack config with ``overrides``, writing into ``out_dir``, logging to CSV files."""
    return compose("attack", out_dir, ["logger=csv", *overrides])


def compose_eval(out_dir: Path, overrides: list[str]) -> DictConfig:
    """The eval config, logging to CSV files."""
    return compose("eval", out_dir, ["logger=csv", *overrides])


def ensure_kernel() -> str:
    """Register the Jupyter kernel ``mocosfl`` in this interpreter's prefix (the venv), so that
    a notebook run by papermill imports the project; a spec left by another interpreter (a moved
    or rebuilt venv) is replaced. Returns the kernel name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        if spec.argv[0] == sys.executable:
            return KERNEL
    except NoSuchKernel:
        pass
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL]
        + ["--display-name", "Python (mocosfl)"],
        check=True,
        capture_output=True,
    )
    return KERNEL


def run_notebook(name: str, out_dir: Path, **parameters) -> tuple[dict, Any]:
    """Execute ``notebooks/<name>.ipynb`` with papermill on the project's kernel, with
    ``parameters`` and a ``results_path`` in ``out_dir``; returns the results the notebook
    recorded and the executed notebook."""
    import nbformat
    import papermill

    results_path = out_dir / "results.json"
    out = out_dir / f"{name}.out.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb"),
        str(out),
        parameters={**parameters, "results_path": str(results_path)},
        kernel_name=ensure_kernel(),
        cwd=str(ROOT),
        progress_bar=False,
    )
    return json.loads(results_path.read_text()), nbformat.read(out, as_version=4)


def fit_one_step(module, batch: dict[str, Any]):
    """One training step of ``module`` on ``batch`` in a bare CPU Trainer (no logs, no files);
    returns the Trainer (its ``callback_metrics`` hold the step's logged values)."""
    import lightning as L
    from torch.utils.data import DataLoader

    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))
    return trainer


def flat_state(ckpt_path: Path) -> dict[str, torch.Tensor]:
    """Every tensor that must continue exactly: weights, momentum copies, queue, optimizers."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = {f"model/{k}": v for k, v in ckpt["state_dict"].items()}
    optimizers = {"server": ckpt["optimizer_states"][0]["state"]}
    optimizers.update({f"client{c}": s["state"] for c, s in enumerate(ckpt["client_optimizers"])})
    for name, per_param in optimizers.items():
        for index, buffers in per_param.items():
            for key, value in buffers.items():
                if torch.is_tensor(value):
                    state[f"opt/{name}/{index}/{key}"] = value
    return state


def run_cli(*overrides: str) -> subprocess.CompletedProcess:
    """``python -m mocosfl.train <overrides>`` in a fresh process (W&B off), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "mocosfl.train", *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
