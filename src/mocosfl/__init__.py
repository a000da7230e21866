"""mocosfl: split-federated MoCo (MocoSFL) training, evaluation and attacks.

Importing the package registers the config resolvers and nothing else; the public functions
load torch and Lightning on first use, so a small helper (``mocosfl.utils.wandb_auth``) starts
in a fraction of a second.
"""

import importlib
from typing import Any

from mocosfl.utils import resolvers as _resolvers

_resolvers.register()

__version__ = "0.1.0"
_PUBLIC = {
    "load_datamodule": "mocosfl.api",
    "load_encoder": "mocosfl.api",
    "load_module": "mocosfl.api",
    "attack_checkpoint": "mocosfl.privacy",
    "run_attack": "mocosfl.privacy",
}
__all__ = ["attack_checkpoint", "load_datamodule", "load_encoder", "load_module", "run_attack"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mocosfl' has no attribute {name!r}")
