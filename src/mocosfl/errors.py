"""The one error type users see: a bad setting or missing input, reported in one line."""

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

Settings = TypeVar("Settings")


class ConfigError(ValueError):
    """A user-fixable problem (bad config value, missing data, unreadable file).

    Entry points catch it and print ``error: <message>`` without a stack trace, so the message
    must say what is wrong and how to fix it, in one line.
    """


def check_all(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise a :class:`ConfigError` with the message of the first ``(ok, message)`` that fails."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def settings_from(cls: type[Settings], values: Mapping[str, Any], what: str) -> Settings:
    """``cls(**values)`` for a settings dataclass; an unknown key is a one-line ConfigError that
    lists the known ones (``what``: "probe", "attack", as the message names them)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"unknown {what} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    return cls(**values)


def require_split_model(module: Any, job: str) -> None:
    """Refuse ``job`` for a method whose clients hold the whole network (FL-MoCo): a
    model-inversion attack needs the latents at a cut, which only a split model has."""
    if not hasattr(module, "cut_layer"):
        raise ConfigError(
            f"{job} needs a split model (module=mocosfl or taressfl); this run trained "
            f"{type(module).__name__}, whose clients hold the whole network and send no latents"
        )
