"""OmegaConf resolvers used by the configs (registered on import of :mod:`mocosfl`)."""

import os
from pathlib import Path

from omegaconf import OmegaConf

PAPER_SERVER_BATCH = 100


def auto_client_batch(num_clients: int) -> int:
    """The paper's --auto_adjust per-client batch: 100 // N up to 50 clients, else 1."""
    return PAPER_SERVER_BATCH // num_clients if num_clients <= 50 else 1


def auto_clients_per_step(num_clients: int) -> int:
    """The paper's --auto_adjust pool: every client below 200, else a ratio 1 / (N // 100)."""
    if num_clients < 200:
        return num_clients
    return num_clients // (num_clients // PAPER_SERVER_BATCH)


def resumed_run_dir(resume: str | None, ckpt_path: str | None) -> Path | None:
    """The directory a resumed training run continues in (``resume=<run dir>``, or
    ``ckpt_path=<run dir>/checkpoints/<file>``); None for a new run."""
    if resume:
        return Path(resume).resolve()
    if ckpt_path:
        path = Path(ckpt_path).resolve()
        if path.parent.name == "checkpoints":
            return path.parent.parent
    return None


def run_dir(resume: str | None, ckpt_path: str | None, new: str) -> str:
    """The training run's directory: its own for a resume, ``new`` otherwise."""
    return str(resumed_run_dir(resume, ckpt_path) or new)


def hydra_subdir(resume: str | None, ckpt_path: str | None, stamp: str) -> str:
    """Where Hydra writes the job's config: ``.hydra``, or beside it for a resume, so that the
    run's own ``.hydra`` (how it was started) stays as it was."""
    return f".hydra/resume_{stamp}" if resumed_run_dir(resume, ckpt_path) else ".hydra"


def register() -> None:
    for name, fn in {
        # The launch directory, resolvable before Hydra sets ``hydra:runtime.cwd`` (a multirun
        # resolves its sweep directory first).
        "mocosfl.cwd": os.getcwd,
        "mocosfl.run_dir": run_dir,
        "mocosfl.hydra_subdir": hydra_subdir,
        "mocosfl.auto_client_batch": auto_client_batch,
        "mocosfl.auto_clients_per_step": auto_clients_per_step,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
