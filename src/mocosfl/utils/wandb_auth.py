"""Whether this process can log in to W&B (light: the Makefile asks it before a sweep)."""

import netrc
import os
from pathlib import Path


def wandb_api_key_configured() -> bool:
    """True if ``wandb login`` or WANDB_API_KEY left a key this process can use."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc"))
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any(host.endswith("wandb.ai") for host in rc.hosts)
