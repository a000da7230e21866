"""The short table every entry point prints when its job ends."""

import logging
import sys
from collections.abc import Sequence
from typing import Any


def duration(seconds: float) -> str:
    """``4m07s`` or ``2h13m``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_summary(
    title: str, rows: Sequence[tuple[str, Any]], next_commands: Sequence[str] = ()
) -> str:
    """``title``, then one aligned ``name  value`` line a row (rows whose value is None are
    left out), then the commands to run next, one a line."""
    shown = [(name, _cell(value)) for name, value in rows if value is not None]
    width = max((len(name) for name, _ in shown), default=0)
    lines = [title, *(f"  {name.ljust(width)}  {value}" for name, value in shown)]
    if next_commands:
        lines.append("next:")
        lines.extend(f"  {command}" for command in next_commands)
    return "\n".join(lines)


def print_summary(
    title: str, rows: Sequence[tuple[str, Any]], next_commands: Sequence[str] = ()
) -> str:
    """Print :func:`format_summary` and return it: through the ``mocosfl`` logger when logging
    is set up (a Hydra job: the console and the job's log file), else on stdout."""
    text = format_summary(title, rows, next_commands)
    if logging.getLogger().handlers:
        logging.getLogger("mocosfl").info("\n%s", text)
    else:
        print(f"\n{text}", file=sys.stdout, flush=True)
    return text
