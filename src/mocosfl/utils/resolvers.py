"""OmegaConf resolvers used by the configs (registered on import of :mod:`mocosfl`)."""

import functools
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

PAPER_SERVER_BATCH = 100
# Beside the configs (mocosfl.utils.run.CONFIG_DIR, not imported: it loads torch, and importing
# mocosfl registers these resolvers).
PAPER_NUMBERS = Path(__file__).resolve().parents[3] / "conf" / "paper" / "numbers.yaml"


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


@functools.cache
def paper_numbers() -> dict[str, dict[str, Any]]:
    """conf/paper/numbers.yaml: {row name: {label, table, dataset, top1, ...}}, in the paper's
    order."""
    return OmegaConf.to_container(OmegaConf.load(PAPER_NUMBERS))


def paper_number(row: str, key: str) -> Any:
    """The paper's ``key`` (``table``, ``top1``, ...) of ``row``; None where the row has none."""
    if row not in paper_numbers():
        raise KeyError(f"{row} is not a paper row: no entry in {PAPER_NUMBERS}")
    return paper_numbers()[row].get(key)


def register() -> None:
    for name, fn in {
        # The launch directory, resolvable before Hydra sets ``hydra:runtime.cwd`` (a multirun
        # resolves its sweep directory first).
        "mocosfl.cwd": os.getcwd,
        "mocosfl.run_dir": run_dir,
        "mocosfl.hydra_subdir": hydra_subdir,
        "mocosfl.auto_client_batch": auto_client_batch,
        "mocosfl.auto_clients_per_step": auto_clients_per_step,
        "mocosfl.paper": paper_number,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
