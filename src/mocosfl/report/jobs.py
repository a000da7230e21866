"""The runs under some folders, to compare side by side: each with its overrides and metrics.

A finished run has ``metrics.json``, an unfinished or failed one only Hydra's ``.hydra`` folder;
its command-line overrides are read from ``.hydra/overrides.yaml``, its method (the ``module=``
choice, which an ``experiment=`` row may set without an override) from ``.hydra/hydra.yaml``. The
trials of an Optuna search (``hparams_search=...``) are the jobs of its multirun; the best one of
``optimization_results.yaml`` is marked.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mocosfl.errors import ConfigError


@dataclass
class Job:
    """One run: its directory, its command-line overrides, its final metrics (None while
    unfinished) and its method (the ``module=`` choice; None where the run does not record it)."""

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, Any] | None
    best: bool = False
    name: str = ""
    method: str | None = None

    @property
    def finished(self) -> bool:
        return self.metrics is not None


def parse_overrides(entries: Iterable[str]) -> dict[str, str]:
    """``{key: value}`` of Hydra override strings; a deletion (``~key``) has the value ''."""
    parsed = {}
    for entry in entries:
        key, _, value = str(entry).partition("=")
        parsed[key] = value
    return parsed


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def load_job(run_dir: Path) -> Job:
    """The run in ``run_dir`` (a folder with ``metrics.json`` or ``.hydra``)."""
    metrics_path = run_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    except json.JSONDecodeError:  # being written right now, or cut short: not finished
        metrics = None
    overrides = parse_overrides(_yaml(run_dir / ".hydra" / "overrides.yaml") or [])
    return Job(path=run_dir, overrides=overrides, metrics=metrics, method=_method(run_dir))


def _method(run_dir: Path) -> str | None:
    """The run's ``module=`` choice from Hydra's ``.hydra/hydra.yaml``; None without one."""
    try:
        hydra_cfg = _yaml(run_dir / ".hydra" / "hydra.yaml")
    except yaml.YAMLError:  # being written, or not Hydra's
        return None
    choices = ((hydra_cfg or {}).get("hydra") or {}).get("runtime", {}).get("choices") or {}
    method = choices.get("module")
    return str(method) if method else None


def _same_value(override: str, wanted: Any) -> bool:
    """Whether an override's text holds ``wanted`` (Optuna reports floats at full precision)."""
    try:
        value = yaml.safe_load(override) if override else None
    except yaml.YAMLError:  # Hydra syntax YAML cannot read (e.g. interval(...)): compare text
        value = override
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
        return math.isclose(value, wanted, rel_tol=1e-9)
    return value == wanted or override == str(wanted)


def mark_optuna_best(jobs: Sequence[Job]) -> None:
    """Mark the trials whose overrides hold the ``best_params`` of their search's results."""
    for job in jobs:
        results = _yaml(job.path.parent / "optimization_results.yaml")
        best = (results or {}).get("best_params")
        if best:
            job.best = all(
                key in job.overrides and _same_value(job.overrides[key], value)
                for key, value in best.items()
            )


def find_jobs(dirs: Sequence[Path]) -> list[Job]:
    """Every run under ``dirs``, each once, in path order; raises ConfigError when none is."""
    for folder in dirs:
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder: give run or multirun directories")
    found = {
        marker.parent.resolve()
        for folder in dirs
        for pattern in ("metrics.json", ".hydra")
        for marker in folder.rglob(pattern)
    }
    if not found:
        raise ConfigError(f"no runs under {' '.join(map(str, dirs))}")
    jobs = [load_job(path) for path in sorted(found, key=_natural_key)]
    mark_optuna_best(jobs)
    _name_jobs(jobs)
    return jobs


def _natural_key(path: Path) -> list[Any]:
    """Job 10 after job 9: number-named parts compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def _name_jobs(jobs: Sequence[Job]) -> None:
    """Name each job by its path below the folder common to all (``0``, ``1``, ... for one
    multirun); a single run by its folder name."""
    common = Path(os.path.commonpath([job.path for job in jobs]))
    for job in jobs:
        relative = job.path.relative_to(common)
        job.name = str(relative) if relative.parts else job.path.name
