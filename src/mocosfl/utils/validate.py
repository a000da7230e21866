"""Catch bad settings before anything is built: typos on the command line and out-of-range values.

Two checks, both pure (no data, no model):

* :func:`check_overrides_or_exit` runs before Hydra parses ``sys.argv``. Hydra rejects an unknown
  key (``sfl.num_clent=5``) or group choice (``sfl=legasy``) with a long message and no hint;
  this composes the config once with the command line's group choices, finds the first override
  whose key or choice does not exist and prints ``error: ... did you mean ...?`` (exit code 2).
  Everything else, including sweeps and Hydra's own flags, is left to Hydra.
* :func:`validate_config` checks the type and range of every numeric, boolean and choice setting
  of a composed training config against the :data:`RULES` table and raises one
  :class:`~mocosfl.errors.ConfigError` listing every problem. A setting that is an interpolation
  (``module.num_clients: ${sfl.num_clients}``) is reported under the key it comes from, the one the
  user sets.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import itertools
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mocosfl.data.datasets import DATASET_NAMES
from mocosfl.data.image_set import STATS_CHOICES
from mocosfl.data.partition import PARTITION_KINDS
from mocosfl.data.transforms import BLUR_KINDS
from mocosfl.errors import ConfigError
from mocosfl.evaluation.linear import HEADS, SCHEDULES
from mocosfl.models.layers import INITS, NORMS, STEMS
from mocosfl.models.split import ARCHITECTURES, parse_bottleneck
from mocosfl.sfl.engines import CLIENT_ENGINES
from mocosfl.sfl.loss import SYMMETRIC_MODES
from mocosfl.sfl.plan import POOL_MODES, FederatedPlan
from mocosfl.sfl.schedules import LRSchedule

__all__ = [
    "CONFIG_DIR",
    "RULES",
    "check_overrides_or_exit",
    "suggest_key_typos",
    "validate_config",
]

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"
_MAX_SEED = 2**32 - 1  # numpy's SeedSequence and Lightning's seed_everything take uint32 seeds


# -- the command line: unknown keys and group choices -------------------------------------------
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
    """The values an override stands for: every choice of a sweep (``sfl=default,legacy``)."""
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


def suggest_key_typos(config_dir: Path, config_name: str, overrides: Sequence[str]) -> str | None:
    """The one-line message (without ``error:``) for the first override that names a group
    choice or a key that does not exist in ``config_dir/config_name``, or None.

    Group overrides (``sfl=legacy``) are checked against the group's files; the other overrides'
    keys against the config composed with the command line's group choices. Keys that are meant
    to be new (``+key=``, ``++key=``) and keys under ``hydra`` are skipped; ``~key`` must exist.
    Sweeps (``a=1,2``, ``range``, ``choice``, ``interval``) are judged by their key. None also
    when the overrides do not parse or do not compose: then Hydra has a better message.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

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


# -- the composed config: types and ranges ------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """A value's type: ``name`` as the message says it, ``test`` whether a value has it."""

    name: str
    test: Callable[[Any], bool]
    nullable: bool = False

    def or_null(self) -> Kind:
        return replace(self, name=f"{self.name} or null", nullable=True)

    def accepts(self, value: Any) -> bool:
        return (value is None and self.nullable) or (value is not None and self.test(value))


@dataclass(frozen=True)
class Bound:
    """A range or choice a value of the right type must be in; ``text`` completes "must be"."""

    test: Callable[[Any], bool]
    text: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's true is not a count


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


INT = Kind("an integer", _is_int)
NUMBER = Kind("a number", _is_number)
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
STR = Kind("a string", lambda v: isinstance(v, str))
# sfl.symmetric: YAML reads `true` as a bool, `legacy` as a string (see sfl.module.symmetric_mode)
SYMMETRIC = Kind(
    "true, legacy or off",
    lambda v: isinstance(v, bool) or (isinstance(v, str) and v.lower() in SYMMETRIC_MODES),
)
ANY = Bound(lambda v: True, "anything")


def ge(low: float) -> Bound:
    return Bound(lambda v: v >= low, f">= {low}")


def gt(low: float) -> Bound:
    return Bound(lambda v: v > low, f"> {low}")


def within(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Bound:
    """``low <= v <= high``, either end open; text in interval notation, e.g. ``in [0, 1)``."""

    def test(v: Any) -> bool:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    return Bound(test, f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")


def one_of(*choices: str) -> Bound:
    return Bound(lambda v: v in choices, f"one of {', '.join(choices)}")


def _bottleneck_ok(spec: str) -> bool:
    try:
        parse_bottleneck(spec)
    except ConfigError:
        return False
    return True


UNBOUNDED_OR_POSITIVE = Bound(lambda v: v == -1 or v >= 1, "-1 (no limit) or >= 1")
BOTTLENECK = Bound(_bottleneck_ok, "C<channels>S<stride> with a power-of-2 stride, e.g. C4S2")
STEP_SCHEDULES = one_of(*LRSchedule.KINDS)
FEATURES = one_of("backbone", "head")

# (key, kind, bound, what it is). A key absent from the config is skipped (presets, experiments
# and callbacks that are not there); null passes only for kinds made with .or_null().
RULES: list[tuple[str, Kind, Bound, str]] = [
    ("seed", INT, within(0, _MAX_SEED), "seeds the data split, the pools and the weights"),
    ("num_threads", INT.or_null(), ge(1), "torch CPU threads"),
    ("expert_target_fraction", NUMBER.or_null(), within(0, 1), "stage-1 share of target data"),
    ("bytes_per_element", INT, ge(1), "bytes of one transmitted number"),
    # sfl: the split-federated algorithm
    ("sfl.cut_layer", INT, ge(1), "client layers; the model gives the upper bound"),
    ("sfl.num_clients", INT, ge(1), "clients"),
    ("sfl.clients_per_step", INT, ge(1), "clients in a round's pool"),
    ("sfl.client_batch_size", INT, ge(1), "images per client and step"),
    ("sfl.sync_every", INT, ge(0), "steps between FedAvg events, 0 = never"),
    ("sfl.pool", STR, one_of(*POOL_MODES), "when the pool is redrawn"),
    ("sfl.code_epoch_steps", INT.or_null(), ge(1), "steps of a code epoch"),
    ("sfl.variant", STR, one_of("fixed", "legacy"), "how mocosfl.table reports the run"),
    ("sfl.fedavg_weights", STR, one_of("data", "uniform"), "FedAvg weights"),
    ("sfl.sync_momentum", BOOL, ANY, "FedAvg of the momentum copies"),
    ("sfl.queue_size", INT, ge(1), "negative keys in the queue"),
    ("sfl.temperature", NUMBER, gt(0), "InfoNCE temperature: the logits are divided by it"),
    ("sfl.ema_decay", NUMBER, within(0, 1, high_open=True), "momentum-encoder decay"),
    ("sfl.symmetric", SYMMETRIC, ANY, "symmetric loss"),
    ("sfl.lr", NUMBER, ge(0), "server learning rate"),
    ("sfl.client_lr", NUMBER, ge(0), "client learning rate"),
    ("sfl.server_schedule", STR, STEP_SCHEDULES, "server learning-rate schedule"),
    ("sfl.client_schedule", STR, STEP_SCHEDULES, "client learning-rate schedule"),
    (
        "sfl.legacy_client_period",
        INT.or_null(),
        ge(1),
        "period of the legacy client cosine (null: derived)",
    ),
    ("sfl.eval_feature", STR, FEATURES, "kNN feature"),
    ("sfl.client_engine", STR, one_of(*CLIENT_ENGINES), "client engine"),
    ("sfl.server_optimizer.lr", NUMBER, ge(0), "server learning rate"),
    ("sfl.server_optimizer.momentum", NUMBER, within(0, 1, high_open=True), "SGD momentum"),
    ("sfl.server_optimizer.weight_decay", NUMBER, ge(0), "weight decay"),
    ("sfl.client_optimizer.lr", NUMBER, ge(0), "client learning rate"),
    ("sfl.client_optimizer.momentum", NUMBER, within(0, 1, high_open=True), "SGD momentum"),
    ("sfl.client_optimizer.weight_decay", NUMBER, ge(0), "weight decay"),
    # data
    ("data.name", STR, one_of(*DATASET_NAMES), "data set (data=<name>)"),
    ("data.root", STR.or_null(), ANY, "the data set's folder (null: only for synthetic data)"),
    ("data.download", BOOL, ANY, "torchvision download"),
    ("data.image_size", INT, ge(8), "image side in pixels"),
    ("data.max_train_images", INT.or_null(), ge(1), "training subset"),
    ("data.val_images", INT, ge(0), "held-out validation images"),
    ("data.partition", STR, one_of(*PARTITION_KINDS), "how clients split the data"),
    ("data.classes_per_client", INT, ge(1), "shards (classes) per client"),
    ("data.dirichlet_alpha", NUMBER, gt(0), "Dirichlet concentration"),
    ("data.num_workers", INT, ge(0), "DataLoader workers"),
    ("data.blur", STR, one_of(*BLUR_KINDS), "blur strength (pil: the original's)"),
    ("data.stats", STR, one_of(*STATS_CHOICES), "normalisation statistics"),
    ("data.eval_batch_size", INT, ge(1), "evaluation batch"),
    ("data.synthetic.num_classes", INT, ge(2), "synthetic classes"),
    ("data.synthetic.train_size", INT, ge(1), "synthetic training images"),
    ("data.synthetic.test_size", INT, ge(1), "synthetic test images"),
    ("data.synthetic.seed", INT, within(0, _MAX_SEED), "synthetic data seed"),
    ("data.target_fraction", NUMBER, within(0, 1), "the expert's share of the target data"),
    ("data.aux.batch_size", INT.or_null(), ge(1), "auxiliary images a step"),
    ("data.aux.download", BOOL, ANY, "auxiliary download"),
    # model
    ("model.arch", STR, one_of(*ARCHITECTURES), "backbone"),
    ("model.width", INT, ge(1), "base channels"),
    ("model.norm", STR, one_of(*NORMS), "normalisation"),
    ("model.weight_std", BOOL, ANY, "weight standardisation"),
    ("model.bottleneck", STR.or_null(), BOTTLENECK, "latent bottleneck"),
    ("model.init", STR, one_of(*INITS), "weight initialisation rule"),
    ("model.stem", STR, one_of(*STEMS), "stem rule (auto: by image size; legacy: the original's)"),
    # module
    ("module.head_hidden_dim", INT, ge(1), "projection head width"),
    ("module.head_out_dim", INT, ge(1), "projection head output"),
    ("module.alpha", NUMBER, ge(0), "TAResSFL hinge weight"),
    ("module.target_ssim", NUMBER, within(-1, 1), "TAResSFL target SSIM"),
    ("module.simulator_width", INT, ge(1), "simulated attacker's width"),
    ("module.simulator_blocks", INT, ge(0), "simulated attacker's blocks"),
    ("module.simulator_lr", NUMBER, ge(0), "simulated attacker's learning rate"),
    ("module.simulator_gamma", NUMBER, gt(0), "simulated attacker's lr decay"),
    # trainer
    ("trainer.max_steps", INT, UNBOUNDED_OR_POSITIVE, "step budget"),
    ("trainer.max_epochs", INT.or_null(), UNBOUNDED_OR_POSITIVE, "epoch budget"),
    ("trainer.num_nodes", INT, ge(1), "machines"),
    ("trainer.log_every_n_steps", INT, ge(1), "logging interval"),
    # callbacks
    ("callbacks.knn.every_n_epochs", INT, ge(0), "kNN interval, 0 = only at the end"),
    ("callbacks.knn.k", INT, ge(1), "kNN neighbours"),
    ("callbacks.knn.temperature", NUMBER, gt(0), "kNN temperature"),
    ("callbacks.knn.test_at_end", BOOL, ANY, "kNN test at the end"),
    ("callbacks.linear_probe.every_n_epochs", INT, ge(0), "probe interval, 0 = only at the end"),
    ("callbacks.linear_probe.test_at_end", BOOL, ANY, "probe test at the end"),
    ("callbacks.linear_probe.probe.head", STR, one_of(*HEADS), "probe head"),
    ("callbacks.linear_probe.probe.epochs", INT, ge(1), "probe epochs"),
    ("callbacks.linear_probe.probe.lr", NUMBER, gt(0), "probe learning rate"),
    ("callbacks.linear_probe.probe.batch_size", INT, ge(2), "probe batch"),
    ("callbacks.linear_probe.probe.weight_decay", NUMBER, ge(0), "probe weight decay"),
    ("callbacks.linear_probe.probe.schedule", STR, one_of(*SCHEDULES), "probe schedule"),
    ("callbacks.linear_probe.probe.standardize", BOOL, ANY, "probe standardisation"),
    (
        "callbacks.linear_probe.probe.label_fraction",
        NUMBER,
        within(0, 1, low_open=True),
        "share of labels",
    ),
    ("callbacks.costs.bytes_per_element", INT, ge(1), "bytes of one transmitted number"),
    ("callbacks.checkpoint.every_n_train_steps", INT, ge(1), "steps between checkpoints"),
    ("callbacks.checkpoint.save_top_k", INT, ge(-1), "checkpoints kept, -1 = all"),
    ("callbacks.checkpoint.save_last", BOOL, ANY, "last.ckpt"),
    ("callbacks.attack.every_n_epochs", INT, ge(0), "attack interval, 0 = only at the end"),
    ("callbacks.attack.at_end", BOOL, ANY, "attack at the end"),
    ("callbacks.attack.aux_fraction", NUMBER, within(0, 1, low_open=True), "attacker's share"),
    ("callbacks.attack.num_targets", INT, ge(1), "reconstructed test images"),
    ("callbacks.attack.seed", INT, within(0, _MAX_SEED), "attack seed"),
    ("callbacks.attack.grid_images", INT.or_null(), ge(1), "pairs in the grid"),
    ("callbacks.attack.logged_images", INT, ge(0), "pairs in the grid"),
    ("callbacks.attack.progress", BOOL, ANY, "decoder progress"),
    ("callbacks.attack.decoder.epochs", INT, ge(1), "decoder epochs"),
    ("callbacks.attack.decoder.steps", INT.or_null(), ge(1), "decoder steps"),
    ("callbacks.attack.decoder.batch_size", INT, ge(1), "decoder batch"),
    ("callbacks.attack.decoder.lr", NUMBER, gt(0), "decoder learning rate"),
    ("callbacks.attack.decoder.width", INT, ge(1), "decoder width"),
    ("callbacks.attack.decoder.num_blocks", INT, ge(0), "decoder blocks"),
    (
        "callbacks.attack.decoder.val_fraction",
        NUMBER,
        within(0, 1, low_open=True, high_open=True),
        "decoder validation share",
    ),
]

# Settings that are copies of others by default (conf/data/*.yaml, the module and the callbacks
# interpolate them): checked with the rule of the key they copy. When they still are copies the
# problem is reported once, under the key the user sets.
_COPIES = {
    "data.seed": "seed",
    "model.cut_layer": "sfl.cut_layer",
    "model.image_size": "data.image_size",
    "module.num_clients": "sfl.num_clients",
    "module.fedavg_weights": "sfl.fedavg_weights",
    "module.queue_size": "sfl.queue_size",
    "module.temperature": "sfl.temperature",
    "module.ema_decay": "sfl.ema_decay",
    "module.symmetric": "sfl.symmetric",
    "module.server_schedule": "sfl.server_schedule",
    "module.client_schedule": "sfl.client_schedule",
    "module.legacy_client_period": "sfl.legacy_client_period",
    "module.client_engine": "sfl.client_engine",
    "module.image_size": "data.image_size",
    "callbacks.fedavg.every": "sfl.sync_every",
    "callbacks.fedavg.sync_momentum": "sfl.sync_momentum",
    "callbacks.costs.sync_momentum": "sfl.sync_momentum",
    "callbacks.knn.feature": "sfl.eval_feature",
    "callbacks.linear_probe.seed": "seed",
}
_BY_KEY = {key: (kind, bound, text) for key, kind, bound, text in RULES}
ALL_RULES = RULES + [(copy, *_BY_KEY[source]) for copy, source in _COPIES.items()]

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
    # A setting computed from a bad one (sfl=auto_adjust from sfl.num_clients) fails to resolve
    # because of it: said only when nothing else explains it.
    found = found or list(unresolved.values())
    if found:
        raise ConfigError("; ".join(found))
