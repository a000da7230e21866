"""The finished runs of paper rows under a folder, each with its evaluations' metrics merged in.

A training run is a directory with ``metrics.json`` (written at the end of training) and Hydra's
``.hydra/config.yaml`` and ``.hydra/hydra.yaml``; it is a paper row's when it has an
``experiment_name`` (:func:`~mocosfl.report.row_config.experiment_name`). Its ``legacy`` or
``fixed`` variant is its ``sfl.variant``, for runs from before that key its preset's name; its
method is its ``module=`` choice (``mocosfl``, or an FL-SSL baseline such as ``flmoco``), for runs
that do not record one ``mocosfl``.

The paper's numbers come from ``conf/paper/numbers.yaml``, looked up by the row config the run
claims, never from the run's own config (whose ``paper`` node, filled from the same file by the
``mocosfl.paper`` resolver, is logged with the run but is unresolved in ``config.yaml`` too).

An evaluation of a run's checkpoint (``python -m mocosfl.eval``, whose ``metrics.json`` names its
``ckpt_path``) found under the same folder overrides that run's metrics of the same name: its
linear probe has the paper's settings, the training callback's a cheap one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mocosfl.report.row_config import check_row, experiment_name, row_name
from mocosfl.utils.resolvers import paper_numbers

DEFAULT_METHOD = "mocosfl"  # conf/train.yaml's module choice


@dataclass
class Run:
    """One finished training run, with the metrics of any later evaluation of it merged in."""

    path: Path
    experiment: str
    variant: str
    seed: int
    metrics: dict[str, Any]
    paper: dict[str, Any] = field(default_factory=dict)
    # "key: run value vs row value" for every compared key that differs from the row's config.
    differences: list[str] = field(default_factory=list)
    method: str = DEFAULT_METHOD  # the run's module= choice


def _load_yaml(path: Path) -> Any:
    return OmegaConf.load(path) if path.is_file() else OmegaConf.create({})


def load_run(run_dir: Path, metrics: dict[str, Any]) -> Run | None:
    """The paper-row run in ``run_dir``, whose ``metrics.json`` holds ``metrics``; else None."""
    cfg = _load_yaml(run_dir / ".hydra" / "config.yaml")
    hydra_cfg = _load_yaml(run_dir / ".hydra" / "hydra.yaml")
    choices = OmegaConf.select(hydra_cfg, "hydra.runtime.choices", default=None) or {}
    experiment = experiment_name(cfg, choices)
    if not experiment:
        return None
    preset = choices.get("sfl", "default")
    seed = int(metrics.get("seed", cfg.get("seed", -1)))
    return Run(
        path=run_dir,
        experiment=experiment,
        # Runs from before sfl.variant: their preset's name says it.
        variant=OmegaConf.select(cfg, "sfl.variant", default=None)
        or ("legacy" if "legacy" in str(preset) else "fixed"),
        seed=seed,
        metrics=metrics,
        paper=paper_numbers().get(row_name(cfg, choices), {}),
        differences=check_row(cfg, choices, seed),
        method=str(choices.get("module") or DEFAULT_METHOD),
    )


def find_runs(root: Path) -> list[Run]:
    """Every paper-row run under ``root``, with the metrics of its evaluations merged in."""
    runs: dict[Path, Run] = {}
    evaluations: list[tuple[Path, dict[str, Any]]] = []
    # Oldest first, so that a later evaluation of the same checkpoint wins.
    for path in sorted(root.rglob("metrics.json"), key=lambda p: p.stat().st_mtime):
        record = json.loads(path.read_text())
        if "ckpt_path" in record:
            evaluations.append((Path(record["ckpt_path"]), record))
        elif (run := load_run(path.parent, record)) is not None:
            runs[run.path.resolve()] = run
    for ckpt_path, record in evaluations:
        # <run dir>/checkpoints/<name>.ckpt
        run = runs.get(ckpt_path.resolve().parent.parent)
        if run is not None:
            run.metrics.update({k: v for k, v in record.items() if "/" in k})
    return list(runs.values())
