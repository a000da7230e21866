"""What the Hydra entry points share, so that each (``mocosfl.train``, ``.eval``, ``.attack``,
``.overhead``) is its job function and one line naming its config."""

from collections.abc import Callable
from typing import Any, TypeVar

import hydra
from omegaconf import DictConfig

from mocosfl.config import check_overrides_or_exit
from mocosfl.errors import ConfigError
from mocosfl.utils.run import CONFIG_DIR, user_errors

Result = TypeVar("Result")


def hydra_entry(config_name: str, job: Callable[[DictConfig], Result]) -> Callable[[], None]:
    """The console entry of ``job`` on ``conf/<config_name>.yaml``: a mistyped key gets its
    one-line "did you mean" before Hydra parses the command line; a user error (a
    :class:`~mocosfl.errors.ConfigError`) ends the job with one line instead of a traceback.
    What ``job`` returns goes to Hydra, which hands it to a sweeper."""

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    def main(cfg: DictConfig) -> Result:
        with user_errors():
            return job(cfg)

    def entry() -> None:
        check_overrides_or_exit(config_name)
        main()

    return entry


def required_checkpoint(cfg: DictConfig) -> str:
    """``ckpt_path`` of an eval or attack job, which has no default."""
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path is required, e.g. ckpt_path=<run dir>/checkpoints/final.ckpt")
    return str(cfg.ckpt_path)


def data_overrides(cfg: DictConfig) -> dict[str, Any]:
    """The ``data.*`` settings an eval or attack job changes in the checkpoint's (null: keep)."""
    return {key: value for key, value in cfg.data.items() if value is not None}
