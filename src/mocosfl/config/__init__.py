"""The training config's checks: typos on the command line (:mod:`.overrides`), the type and range
of every setting (:mod:`.rules`, checked by :mod:`.validate`)."""

from .overrides import CONFIG_DIR, check_overrides_or_exit, suggest_key_typos
from .rules import RULES
from .validate import validate_config

__all__ = ["CONFIG_DIR", "RULES", "check_overrides_or_exit", "suggest_key_typos", "validate_config"]
