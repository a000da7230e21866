"""Check a composed training config against :mod:`mocosfl.config.rules` before anything is built:
one :class:`~mocosfl.errors.ConfigError` lists every problem. A setting that is an interpolation
(``module.num_clients: ${sfl.num_clients}``) is reported under the key it comes from, the one the
user sets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mocosfl.errors import ConfigError
from mocosfl.sfl.plan import FederatedPlan

from .rules import ALL_RULES, Bound, Kind

__all__ = ["source_key", "validate_config"]

_REFERENCE = re.compile(r"\$\{(\.*)([\w.]+)\}")  # ${sfl.lr}, ${.lr}, ${..lr}; not resolvers


def _raw_node(cfg: DictConfig, key: str) -> Any | None:
    """The config node at ``key`` without resolving it, or None when it is not there."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or name not in parent.keys():
        return None
    return parent._get_node(name)


def source_key(cfg: DictConfig, key: str) -> str:
    """The key whose value ``key`` holds: interpolations ``${a.b}``, ``${.x}``, ``${..x}`` are
    followed to the key the user sets (``module.num_clients`` -> ``sfl.num_clients``)."""
    for _ in range(16):  # a guard against cycles; OmegaConf reports those itself
        node = _raw_node(cfg, key)
        match = _REFERENCE.fullmatch(str(node._value())) if node is not None else None
        if match is None or not node._is_interpolation():
            return key
        dots, target = match.groups()
        if dots:  # relative: one dot is the key's own parent, each further dot one level up
            base = key.split(".")[: -len(dots)]
            target = ".".join([*base, target])
        key = target
    return key


@dataclass(frozen=True)
class _Value:
    """What a key holds: ``state`` is ok, absent, missing (``???``) or unresolvable (then
    ``value`` is the reason)."""

    state: str
    value: Any = None


def _lookup(cfg: DictConfig, key: str) -> _Value:
    node = _raw_node(cfg, key)
    if node is None:
        return _Value("absent")
    if node._is_missing():  # select() would hand back its default for ???
        return _Value("missing")
    try:
        return _Value("ok", OmegaConf.select(cfg, key, throw_on_missing=True))
    except MissingMandatoryValue:  # an interpolation of a ??? value
        return _Value("missing")
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        return _Value("unresolvable", lines[0] if lines else type(exc).__name__)


def _shown(value: Any) -> str:
    """A value as the user would type it on the command line (true, null, 'abc', 0.1)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


def _problem(key: str, found: _Value, kind: Kind, bound: Bound, text: str) -> str | None:
    """The problem with the value ``found`` at ``key`` as one message, or None when it is fine."""
    if found.state == "absent":
        return None
    if found.state == "missing":
        return f"{key} must be set ({text}): it is ??? in the config"
    if found.state == "unresolvable":
        return f"{key} could not be computed: {found.value}"
    value = found.value
    if not kind.accepts(value):
        return f"{key}={_shown(value)} must be {kind.name}"
    if value is None or bound.test(value):
        return None
    return f"{key}={_shown(value)} must be {bound.text} ({text})"


def _cross_checks(good: dict[str, Any]) -> list[str]:
    """Rules between settings, run on the values that passed their own checks."""
    problems = []
    clients, pool = good.get("sfl.num_clients"), good.get("sfl.clients_per_step")
    if clients is not None and pool is not None:
        try:
            FederatedPlan(num_clients=clients, clients_per_step=pool)
        except ConfigError as problem:
            problems.append(str(problem))
    if good.get("trainer.max_steps") == -1 and good.get("trainer.max_epochs") == -1:
        problems.append(
            "trainer.max_steps=-1 and trainer.max_epochs=-1: training would never end; "
            "set a step or an epoch budget"
        )
    return problems


def validate_config(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` listing (``; ``-joined) every setting of a composed
    training config (``conf/train.yaml`` or ``conf/overhead.yaml``) whose type or range is
    wrong, each under the key the user sets. Pure and fast: nothing is loaded or built.

    The model's own limits (the largest ``sfl.cut_layer`` of an architecture) and those that need
    the data (images per client) stay with the model and the data module.
    """
    problems: dict[str, str] = {}  # by source key: a problem of a copied setting counts once
    unresolved: dict[str, str] = {}
    good: dict[str, Any] = {}
    for key, kind, bound, text in ALL_RULES:
        source = source_key(cfg, key)
        if source in problems or source in unresolved or source in good:
            continue
        found = _lookup(cfg, source)
        message = _problem(source, found, kind, bound, text)
        if message is None:
            if found.state == "ok":
                good[source] = found.value
        elif found.state == "unresolvable":
            unresolved[source] = message
        else:
            problems[source] = message
    found = [*problems.values(), *_cross_checks(good)]
    # A setting computed from a bad one (sizing=auto_adjust from sfl.num_clients) fails to resolve
    # because of it: said only when nothing else explains it.
    found = found or list(unresolved.values())
    if found:
        raise ConfigError("; ".join(found))
