"""Typos on the command line, caught before Hydra parses ``sys.argv``.

Hydra rejects an unknown key (``sfl.num_clent=5``) or group choice (``sfl=legasy``) with a long
message and no hint. :func:`check_overrides_or_exit` composes the config once with the command
line's group choices, finds the first override whose key or choice does not exist and prints
``error: ... did you mean ...?`` (exit code 2). Everything else, including sweeps and Hydra's own
flags, is left to Hydra.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import itertools
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mocosfl.utils.run import CONFIG_DIR

__all__ = ["CONFIG_DIR", "check_overrides_or_exit", "suggest_key_typos"]


def _group_dir(config_dir: Path, key: str) -> Path | None:
    """The folder of config group ``key`` in ``config_dir``, or None when ``key`` is a setting.

    ``hydra/...`` groups come from Hydra and its plugins, not from the conf dir: never ours.
    """
    if key == "hydra" or key.startswith(("hydra/", "hydra.")):
        return None
    folder = config_dir / key
    return folder if folder.is_dir() else None


def _group_options(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _choices(override: Any) -> list[Any]:
    """The values an override stands for: every choice of a sweep (``sfl=fixed,legacy``)."""
    if not override.is_sweep_override():
        return [override.value()]
    try:
        return list(override.sweep_string_iterator())
    except Exception:
        return []


def _unknown_choice(config_dir: Path, override: Any) -> str | None:
    """The message for a group override whose choice has no file in the group, else None."""
    folder = _group_dir(config_dir, override.key_or_group)
    if folder is None or override.is_delete():
        return None
    options = _group_options(folder)
    group = override.key_or_group
    for choice in _choices(override):
        if not isinstance(choice, str) or choice in options or choice == "null":
            continue
        close = difflib.get_close_matches(choice, options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        # Hydra's own wording ("Could not find", "Available options") is kept: users and tests
        # search for it.
        return (
            f"{group}={choice}: Could not find '{group}/{choice}'; {hint}"
            f"Available options: {', '.join(options)}"
        )
    return None


def _group_choice_sets(group_overrides: list[Any]) -> Iterator[list[str]]:
    """Override lists to compose: the first choice of every group, then each other choice of a
    swept group in turn (keys may differ between choices, e.g. between experiments)."""
    first = [(o, _choices(o)) for o in group_overrides]

    def as_override(override: Any, choice: Any) -> str:
        prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~"}.get(override.type.name, "")
        package = f"@{override.package}" if override.package else ""
        if override.is_delete():
            return f"~{override.key_or_group}{package}"
        value = "null" if choice is None else choice
        return f"{prefix}{override.key_or_group}{package}={value}"

    base = [as_override(o, choices[0] if choices else None) for o, choices in first]
    yield base
    for i, (override, choices) in enumerate(first):
        for choice in choices[1:]:
            yield [*base[:i], as_override(override, choice), *base[i + 1 :]]


@contextlib.contextmanager
def _fresh_hydra() -> Iterator[None]:
    """A Hydra of our own for composing, leaving any already initialised one (tests) as it was."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        restore_gh_from_backup(backup)


def _compose_all(config_dir: Path, config_name: str, override_sets: Iterator[list[str]]):
    """The composed configs (not resolved) for each override list; None if any fails, so that
    Hydra reports whatever is wrong in its own words."""
    from hydra import compose, initialize_config_dir

    configs = []
    with _fresh_hydra(), initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for overrides in itertools.islice(override_sets, 32):  # a cap: a check, not a sweep
            try:
                configs.append(compose(config_name, overrides=overrides))
            except Exception:
                return None
    return configs


def _missing_part(cfg: DictConfig, key: str) -> tuple[str, list[str]] | None:
    """(the first dotted prefix of ``key`` that is not in ``cfg``, the keys of its parent), or
    None when the key exists or cannot be judged without resolving (lists, values)."""
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
            return None
        if node._is_interpolation():  # its keys are those of what it points to: not judged
            return None
        # keys(), not `in`: `in` says False for a ??? value, which is a setting all the same
        if part not in node.keys():
            return ".".join(parts[: depth + 1]), [str(k) for k in node]
        node = node._get_node(part)
    return None


def _unknown_key(configs: list[DictConfig], key: str) -> str | None:
    """The message for a key that none of ``configs`` has, with the closest existing key."""
    misses = [_missing_part(cfg, key) for cfg in configs]
    if not all(misses):
        return None
    missing, siblings = misses[0]
    parent, _, name = missing.rpartition(".")
    rest = key[len(missing) :]  # the part after the misspelt one, e.g. ".width" of modle.width
    close = [f"{parent}.{c}" if parent else c for c in difflib.get_close_matches(name, siblings)]
    # modle.width: "module" is as close to "modle" as "model", but only model has a width
    fitting = [c for c in close if _missing_part(configs[0], c + rest) is None]
    if close:
        return f"{missing} is not a setting; did you mean {(fitting or close)[0]}?"
    where = f"{parent} has" if parent else "the settings are"
    return (
        f"{missing} is not a setting ({where}: {', '.join(sorted(siblings))}); "
        f"to add a new key use +{key}=..."
    )


def _is_hydra_key(override: Any) -> bool:
    """Overrides Hydra owns (``hydra.run.dir``, ``hydra/launcher``) or that place a config in
    another package (``data@aux=...``): Hydra checks those itself."""
    key = override.key_or_group
    return bool(override.package) or key == "hydra" or key.startswith(("hydra.", "hydra/"))


def suggest_key_typos(
    config_dir: str | Path, config_name: str, overrides: Sequence[str]
) -> str | None:
    """The one-line message (without ``error:``) for the first override that names a group
    choice or a key that does not exist in ``config_dir/config_name``, or None.

    Group overrides (``sfl=legacy``) are checked against the group's files; the other overrides'
    keys against the config composed with the command line's group choices. Keys that are meant
    to be new (``+key=``, ``++key=``) and keys under ``hydra`` are skipped; ``~key`` must exist.
    Sweeps (``a=1,2``, ``range``, ``choice``, ``interval``) are judged by their key. None also
    when the overrides do not parse or do not compose: then Hydra has a better message.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config_dir = Path(config_dir)

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:
        return None
    parsed = [o for o in parsed if not _is_hydra_key(o)]
    groups = [o for o in parsed if _group_dir(config_dir, o.key_or_group) is not None]
    settings = [o for o in parsed if _group_dir(config_dir, o.key_or_group) is None]
    for override in groups:
        message = _unknown_choice(config_dir, override)
        if message:
            return message
    if not settings:
        return None
    configs = _compose_all(config_dir, config_name, _group_choice_sets(groups))
    if not configs:
        return None
    added: list[str] = []  # keys a +key= override creates exist for the overrides after it
    for override in settings:
        key = override.key_or_group
        if override.is_add() or override.is_force_add():
            added.append(key)
            continue
        if any(key == a or key.startswith(f"{a}.") for a in added):
            continue
        message = _unknown_key(configs, key)
        if message:
            return message
    return None


def _hydra_arguments(argv: Sequence[str]) -> Any | None:
    """Hydra's own reading of the command line (its parser: flags such as ``-m``, ``--cfg job``
    and ``-cn`` are told apart from overrides), or None when it does not parse."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # Hydra prints the parse error itself
            args, unknown = get_args_parser().parse_known_args(list(argv))
    except SystemExit:
        return None
    return None if unknown else args


def check_overrides_or_exit(config_name: str, argv: Sequence[str] | None = None) -> None:
    """Print ``error: <what is wrong; did you mean ...>`` and exit with code 2 when a command-line
    override of ``conf/<config_name>.yaml`` names a key or group choice that does not exist;
    otherwise return and let Hydra run. ``argv`` defaults to ``sys.argv[1:]``.

    Help, shell completion, ``--info`` and another config path or name chosen on the command line
    are Hydra's business: nothing is checked then.
    """
    args = _hydra_arguments(sys.argv[1:] if argv is None else argv)
    if args is None or not args.overrides:
        return
    if args.help or args.hydra_help or args.shell_completion or args.info is not None:
        return
    if args.config_path or args.config_dir or args.experimental_rerun:
        return
    message = suggest_key_typos(CONFIG_DIR, args.config_name or config_name, args.overrides)
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
