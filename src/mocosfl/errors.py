"""The one error type users see: a bad setting or missing input, reported in one line."""

from collections.abc import Iterable


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
