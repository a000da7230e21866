"""Shared pieces of the entry points: user errors, instantiation of config dicts, metrics.json."""

import contextlib
import functools
import json
import logging
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import hydra
import torch
from omegaconf import DictConfig

from mocosfl.errors import ConfigError

# An absolute path, so that the console scripts find the configs from any directory (Hydra
# reads a relative one against the calling module, which a console script does not have).
CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "conf")


def resolve_device(name: str) -> torch.device:
    """``device=<name>`` of the eval and attack jobs: ``auto`` is CUDA when available, else the
    CPU; any other name is a torch device (``cpu``, ``cuda:1``, ...)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def find_config_error(exc: BaseException) -> ConfigError | None:
    """The ConfigError behind ``exc`` (Hydra wraps errors raised inside instantiate)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConfigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


# Messages of the libraries that a user of this suite cannot act on, each with the reason.
NOISE = (
    # Lightning's own use of a torch API that torch deprecated; nothing to do on our side.
    r".*isinstance\(treespec, LeafSpec\)",
    # FedAvg and the step budget do not depend on epochs: logging every n steps across epoch
    # boundaries is what we want.
    r"The number of training batches .* is smaller than the logging interval",
    # The step loader starts at trainer.global_step, and the batch of step t is a function of
    # (seed, t): a resume mid-epoch is exact (tests/test_train.py shows it).
    r"You're resuming from a checkpoint that ended before the epoch ended",
)
NOISY_PREFIXES = ("💡 Tip:",)  # Lightning's advertisements for its cloud products


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISY_PREFIXES)


_library_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Our own warnings as one line, ``warning: <what to do>``; other libraries' as usual."""
    if Path(filename).resolve().is_relative_to(Path(__file__).resolve().parents[1]):
        return f"warning: {message}\n"
    return _library_format(message, category, filename, lineno, line)


def quiet_known_noise() -> None:
    """Silence the messages in :data:`NOISE` and Lightning's tips; every other warning shows,
    ours in one line."""
    warnings.formatwarning = _format_warning
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    # On the handlers: a logger's own filters do not see its children's records.
    handlers = [*logging.getLogger("lightning.pytorch").handlers, *logging.getLogger().handlers]
    for handler in handlers:
        if not any(isinstance(f, _DropTips) for f in handler.filters):
            handler.addFilter(_DropTips())


def remove_if_empty_run_dir() -> None:
    """Remove this Hydra job's directory when it holds nothing but what Hydra and the loggers
    wrote at the start: a job refused for a bad setting leaves no empty run behind."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    runtime = HydraConfig.get()
    out = Path(runtime.runtime.output_dir)
    leftovers = {".hydra", f"{runtime.job.name}.log", "wandb_run_id"}
    if out.is_dir() and all(entry.name in leftovers for entry in out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """The frame of every entry point's job.

    A ConfigError anywhere in the chain becomes one line on stderr and exit code 2; any other
    error propagates. A W&B run (if the job started one) is always closed, marked failed when the
    job failed, so that a sweep agent records the failure and goes on to its next run.
    """
    quiet_known_noise()
    failed = True
    try:
        yield
        failed = False
    except Exception as exc:
        error = find_config_error(exc)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        remove_if_empty_run_dir()
        sys.exit(2)
    finally:
        # Only a job that imported W&B (for its logger) has a run to close: the others run
        # without wandb installed (as on an offline GPU machine's image).
        wandb = sys.modules.get("wandb")
        if wandb is not None:
            wandb.finish(exit_code=1 if failed else 0)


Job = TypeVar("Job", bound=Callable[..., Any])


def with_num_threads(job: Job) -> Job:
    """Run ``job(cfg)`` with torch's CPU thread count set to ``cfg.num_threads`` (when given) and
    restore it afterwards, so an in-process call (tests, notebooks) leaves no global change."""

    @functools.wraps(job)
    def wrapper(cfg: DictConfig, *args: Any, **kwargs: Any) -> Any:
        previous = torch.get_num_threads()
        if cfg.get("num_threads"):
            torch.set_num_threads(cfg.num_threads)
        try:
            return job(cfg, *args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper  # type: ignore[return-value]


def instantiate_each(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a name-keyed config dict (callbacks,
    loggers)."""
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
