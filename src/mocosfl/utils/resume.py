"""Resuming a run: the settings come from its checkpoint, the command line changes single keys.

Every checkpoint stores the run's config twice: ``run_config`` fully resolved (what evaluation
reads) and ``run_source``, the config with its links between settings kept (``sfl.client_lr``
still follows ``sfl.lr``) and only its links into Hydra's runtime and the launch directory
replaced by their values, plus the run's group choices. A resume rebuilds the config from
``run_source`` and applies the overrides typed now, so ``ckpt_path=<run>/checkpoints/last.ckpt``
or ``resume=<run dir>`` alone continues the run as it was started. Group choices that differ
from the run's, and overrides that change the shape of the saved state, are refused in one line.
"""

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from mocosfl.errors import ConfigError

# Changing any of these changes the shape of a tensor in the checkpoint.
SHAPE_KEYS = (
    "model",
    "module._target_",
    "sfl.cut_layer",
    "sfl.num_clients",
    "sfl.queue_size",
    "module.head_hidden_dim",
    "module.head_out_dim",
)
# Interpolations whose value belongs to the launch, not to the run's settings.
LAUNCH_INTERPOLATIONS = ("${hydra:", "${now:", "${mocosfl.cwd:")
# Taken from the command line as it is now: where this invocation writes, what it resumes from.
LAUNCH_KEYS = ("paths.output_dir", "ckpt_path", "resume")
# Groups that may change on resume: they do not define the experiment.
FREE_GROUPS = ("logger", "paths")
_ABSENT = object()


def _join(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def frozen_source(cfg: DictConfig) -> dict[str, Any]:
    """``run_source`` of ``cfg`` (see the module doc): ``{"config": ..., "choices": ...}``."""
    source = OmegaConf.to_container(cfg, resolve=False)

    def freeze(node: Any, path: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            where = _join(path, key)
            if isinstance(value, (dict, list)):
                freeze(value, where)
            elif isinstance(value, str) and any(m in value for m in LAUNCH_INTERPOLATIONS):
                resolved = OmegaConf.select(cfg, where)
                if isinstance(resolved, (DictConfig, ListConfig)):
                    resolved = OmegaConf.to_container(resolved, resolve=True)
                node[key] = resolved

    freeze(source, "")
    return {"config": source, "choices": _current_choices()}


def _current_choices() -> dict[str, str]:
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if not k.startswith("hydra")}


def _current_overrides() -> list[Any] | None:
    """The overrides typed for this job, parsed; None when not run through Hydra."""
    if not HydraConfig.initialized():
        return None
    typed = list(HydraConfig.get().overrides.task)
    return OverridesParser.create().parse_overrides(typed)


def resume_checkpoint(resume: str | None, ckpt_path: str | None) -> str | None:
    """The checkpoint a run resumes from: ``ckpt_path``, or ``<resume>/checkpoints/last.ckpt``."""
    if resume and ckpt_path:
        raise ConfigError("give resume=<run dir> or ckpt_path=<checkpoint>, not both")
    if resume:
        last = Path(resume) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(f"resume={resume}: {last} does not exist; is it a run directory?")
        return str(last)
    if ckpt_path and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist")
    return ckpt_path


def _refuse_group_changes(overrides: list[Any], saved_choices: dict[str, str]) -> None:
    changed = [
        f"{o.key_or_group}={o.value()} (the run has {saved_choices[o.key_or_group]})"
        for o in overrides
        if o.key_or_group in saved_choices
        and o.key_or_group not in FREE_GROUPS
        and str(o.value()) != saved_choices[o.key_or_group]
    ]
    if changed:
        raise ConfigError(
            "a resume keeps the run's config groups; drop "
            + ", ".join(changed)
            + " or start a new run without ckpt_path/resume"
        )


def _apply(resumed: DictConfig, cfg: DictConfig, key: str, delete: bool) -> None:
    """Set ``key`` of ``resumed`` as it is in ``cfg`` (links kept), or delete it."""
    parent_key, _, leaf = key.rpartition(".")
    with open_dict(resumed):
        parent = OmegaConf.select(resumed, parent_key) if parent_key else resumed
        if delete:
            if parent is not None and leaf in parent:
                del parent[leaf]
            return
        source = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        raw = OmegaConf.to_container(source, resolve=False)[leaf]
        OmegaConf.update(resumed, key, raw, merge=False, force_add=True)


def resumed_config(cfg: DictConfig, checkpoint: dict[str, Any]) -> DictConfig:
    """The config a resume runs with (see the module doc); ``cfg`` is the freshly composed one."""
    source = checkpoint.get("run_source")
    overrides = _current_overrides()
    if source is None or overrides is None:
        resumed = cfg  # a checkpoint without its source, or a config built in Python: as given
    else:
        _refuse_group_changes(overrides, source.get("choices", {}))
        resumed = OmegaConf.create(source["config"])
        typed = [
            (o.key_or_group, o.is_delete())
            for o in overrides
            if o.key_or_group not in source.get("choices", {}) or o.key_or_group in FREE_GROUPS
        ]
        for key, delete in [*typed, *((k, False) for k in LAUNCH_KEYS)]:
            absent = OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT
            if key.startswith("hydra") or (absent and not delete):
                continue
            _apply(resumed, cfg, key, delete)
    _refuse_shape_changes(OmegaConf.to_container(resumed, resolve=True), checkpoint["run_config"])
    return resumed


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}"))
        return out
    return {prefix: node}


def _select(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _refuse_shape_changes(new: dict[str, Any], saved: dict[str, Any]) -> None:
    differ = []
    for key in SHAPE_KEYS:
        was, now = _flat(_select(saved, key), key), _flat(_select(new, key), key)
        differ += [
            f"{k} {was.get(k)} -> {now.get(k)}"
            for k in sorted(was.keys() | now.keys())
            if was.get(k) != now.get(k)
        ]
    if differ:
        raise ConfigError(
            "the checkpoint's state has another shape: "
            + ", ".join(differ)
            + "; resume with the run's settings or start a new run without ckpt_path/resume"
        )
