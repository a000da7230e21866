"""Logger factories for the configs."""

import os
import secrets
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from mocosfl.utils.wandb_auth import wandb_api_key_configured


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """A ``WandbLogger`` that logs offline when no API key is configured.

    An explicit ``WANDB_MODE`` (online, offline, disabled) always wins. Offline runs are kept in
    the run directory and can be uploaded later with ``wandb sync``.

    A run keeps one W&B run id, stored in its directory (``wandb_run_id``), so that a resume
    continues the same W&B run; a sweep agent's own id (``WANDB_RUN_ID``) wins.
    """
    offline = os.environ.get("WANDB_MODE") == "offline"
    if "WANDB_MODE" not in os.environ and not wandb_api_key_configured():
        rank_zero_info("W&B: no API key configured, logging offline (upload later: wandb sync)")
        kwargs.setdefault("mode", "offline")
        offline = True
    disabled = os.environ.get("WANDB_MODE") == "disabled" or kwargs.get("mode") == "disabled"
    if "WANDB_RUN_ID" not in os.environ and kwargs.get("save_dir") and not disabled:
        kwargs.setdefault("id", run_id(Path(kwargs["save_dir"])))
        if not offline:  # W&B ignores resume offline, and says so; `wandb sync` joins the parts
            kwargs.setdefault("resume", "allow")
    logger = WandbLogger(**kwargs)
    # Lightning always passes W&B an `anonymous` setting, which W&B has retired and warns about
    # on every run; leaving it out changes nothing else.
    logger._wandb_init.pop("anonymous", None)
    return logger


def run_id(run_dir: Path) -> str:
    """The W&B run id of a run directory, made on first use."""
    path = run_dir / "wandb_run_id"
    if path.is_file():
        return path.read_text().strip()
    run_dir.mkdir(parents=True, exist_ok=True)
    new = secrets.token_hex(4)  # W&B's id alphabet: lower-case letters and digits
    path.write_text(new + "\n")
    return new
