"""Logger factories for the configs."""

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info


def wandb_api_key_configured() -> bool:
    """True if ``wandb login`` or WANDB_API_KEY left a key this process can use."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc"))
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any(host.endswith("wandb.ai") for host in rc.hosts)


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """A ``WandbLogger`` that logs offline when no API key is configured.

    An explicit ``WANDB_MODE`` (online, offline, disabled) always wins. Offline runs are kept in
    the run directory and can be uploaded later with ``wandb sync``.
    """
    if "WANDB_MODE" not in os.environ and not wandb_api_key_configured():
        rank_zero_info("W&B: no API key configured, logging offline (upload later: wandb sync)")
        kwargs.setdefault("mode", "offline")
    return WandbLogger(**kwargs)
