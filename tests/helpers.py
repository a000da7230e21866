"""Test helpers: configs composed as Hydra would compose them, the notebook kernel registered
inside the project's environment, and notebooks run on it."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "mocosfl"


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
