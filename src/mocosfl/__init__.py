"""mocosfl: split-federated MoCo (MocoSFL) training, evaluation and attacks."""

from mocosfl.utils import resolvers as _resolvers

_resolvers.register()

from mocosfl.api import load_datamodule, load_encoder, load_module  # noqa: E402
from mocosfl.privacy import attack_checkpoint, run_attack  # noqa: E402

__version__ = "0.1.0"
__all__ = ["attack_checkpoint", "load_datamodule", "load_encoder", "load_module", "run_attack"]
