"""mocosfl: split-federated MoCo (MocoSFL) training, evaluation and attacks."""

from mocosfl.utils import resolvers as _resolvers

_resolvers.register()

__version__ = "0.1.0"
