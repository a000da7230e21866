"""Shared pieces of the entry points: user errors, instantiation of config dicts, metrics.json."""

import contextlib
import functools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import hydra
import torch
from omegaconf import DictConfig

from mocosfl.errors import ConfigError


def find_config_error(exc: BaseException) -> ConfigError | None:
    """The ConfigError behind ``exc`` (Hydra wraps errors raised inside instantiate)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConfigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """The frame of every entry point's job.

    A ConfigError anywhere in the chain becomes one line on stderr and exit code 2; any other
    error propagates. The W&B run is always closed, marked failed when the job failed, so that a
    sweep agent records the failure and goes on to its next run.
    """
    failed = True
    try:
        yield
        failed = False
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
        error = find_config_error(exc)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    finally:
        import wandb

        wandb.finish(exit_code=1 if failed else 0)


Job = TypeVar("Job", bound=Callable[[DictConfig], Any])


def with_num_threads(job: Job) -> Job:
    """Run ``job(cfg)`` with torch's CPU thread count set to ``cfg.num_threads`` (when given) and
    restore it afterwards, so an in-process call (tests, notebooks) leaves no global change."""

    @functools.wraps(job)
    def wrapper(cfg: DictConfig) -> Any:
        previous = torch.get_num_threads()
        if cfg.get("num_threads"):
            torch.set_num_threads(cfg.num_threads)
        try:
            return job(cfg)
        finally:
            torch.set_num_threads(previous)

    return wrapper  # type: ignore[return-value]


def instantiate_each(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a name-keyed config dict (callbacks, loggers)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c and "_target_" in c]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def write_metrics(path: Path, metrics: Mapping[str, float], **extra: Any) -> dict[str, Any]:
    """Write ``metrics.json``: the final value of every logged metric, plus ``extra``."""
    record = {name: float(value) for name, value in sorted(metrics.items())}
    record.update(extra)
    record["git_commit"] = git_commit()
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record
