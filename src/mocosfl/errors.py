"""The one error type users see: a bad setting or missing input, reported in one line."""


class ConfigError(ValueError):
    """A user-fixable problem (bad config value, missing data, unreadable file).

    Entry points catch it and print ``error: <message>`` without a stack trace, so the message
    must say what is wrong and how to fix it, in one line.
    """
