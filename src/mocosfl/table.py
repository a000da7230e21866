"""Collect finished runs into the paper's table: ``python -m mocosfl.table --runs logs/``.

A training run is a directory with ``metrics.json`` (written at the end of training) and Hydra's
``.hydra/config.yaml``; runs of a paper row carry its name in ``experiment_name`` (set by
``conf/experiment/table*.yaml``). Runs are grouped by row and variant -- ``legacy`` when trained
with a legacy ``sfl`` preset (as published), else ``fixed`` -- and each group is reported as the
mean and sample standard deviation over the paper scripts' seeds (1234, 1235, 1236), as a
Markdown table for the README's "measured here" column.

An evaluation of a run's checkpoint (``python -m mocosfl.eval``, whose ``metrics.json`` names its
``ckpt_path``) found under ``--runs`` overrides that run's metrics of the same name: its linear
probe has the paper's settings, the training callback's a cheap one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

PAPER_SEEDS = (1234, 1235, 1236)
# Reported metric when none is asked for: the first one that every run of the row has.
DEFAULT_METRICS = ("test/linear_top1", "test/knn_top1")


@dataclass
class Run:
    """One finished training run, with the metrics of any later evaluation of it merged in."""

    path: Path
    experiment: str
    variant: str
    seed: int
    metrics: dict[str, Any]
    paper: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    """One line of the table: a row of the paper, one variant, one metric over its seeds."""

    experiment: str
    variant: str
    metric: str | None
    values: dict[int, float]
    paper: dict[str, Any]

    def measured(self) -> str:
        if not self.values:
            return "no metric common to all seeds"
        values = list(self.values.values())
        mean = statistics.fmean(values)
        if len(values) == 1:
            return f"{mean:.2f} (1 seed)"
        return f"{mean:.2f} ± {statistics.stdev(values):.2f}"

    def paper_value(self) -> str:
        """The paper's number for this metric: attack MSE, else the linear top-1 it reports."""
        key = "attack_mse" if self.metric == "attack/mse" else "top1"
        value, std = self.paper.get(key), self.paper.get(f"{key}_std")
        if value is None:
            return "not found"
        return f"{value} ± {std}" if std is not None else str(value)


def _load_yaml(path: Path) -> Any:
    return OmegaConf.load(path) if path.is_file() else OmegaConf.create({})


def load_run(run_dir: Path, metrics: dict[str, Any]) -> Run | None:
    """The paper-row run in ``run_dir``, whose ``metrics.json`` holds ``metrics``; else None."""
    cfg = _load_yaml(run_dir / ".hydra" / "config.yaml")
    # Resolved within the run's own config (a name may interpolate other keys of it).
    experiment = OmegaConf.select(cfg, "experiment_name", throw_on_resolution_failure=False)
    if not experiment:  # not a paper row (or a base config's missing name)
        return None
    hydra_cfg = _load_yaml(run_dir / ".hydra" / "hydra.yaml")
    preset = OmegaConf.select(hydra_cfg, "hydra.runtime.choices.sfl", default="default")
    paper = OmegaConf.select(cfg, "paper", default=None)
    return Run(
        path=run_dir,
        experiment=str(experiment),
        variant="legacy" if "legacy" in str(preset) else "fixed",
        seed=int(metrics.get("seed", cfg.get("seed", -1))),
        metrics=metrics,
        paper=OmegaConf.to_container(paper) if paper is not None else {},
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


def latest_per_seed(runs: Iterable[Run]) -> dict[int, Run]:
    """One run per seed: a seed run twice (e.g. after a fix) counts with its newest run."""
    newest: dict[int, Run] = {}
    for run in sorted(runs, key=lambda r: (r.path / "metrics.json").stat().st_mtime):
        newest[run.seed] = run
    return newest


def choose_metric(runs: Sequence[Run], metric: str | None) -> str | None:
    """``metric`` if given, else the first of DEFAULT_METRICS that every run has."""
    if metric:
        return metric
    for name in DEFAULT_METRICS:
        if all(name in run.metrics for run in runs):
            return name
    return None


def summarize(
    runs: Iterable[Run], seeds: Sequence[int] = PAPER_SEEDS, metric: str | None = None
) -> list[Row]:
    """Group ``runs`` by (row, variant), keep ``seeds``, and reduce each group to one Row."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.seed in seeds:
            groups[(run.experiment, run.variant)].append(run)
    rows = []
    for (experiment, variant), group in sorted(groups.items()):
        by_seed = latest_per_seed(group)
        name = choose_metric(list(by_seed.values()), metric)
        values = {
            seed: float(run.metrics[name])
            for seed, run in sorted(by_seed.items())
            if name is not None and name in run.metrics
        }
        paper = next((run.paper for run in by_seed.values() if run.paper), {})
        rows.append(Row(experiment, variant, name, values, paper))
    return rows


def format_table(rows: Sequence[Row], seeds: Sequence[int] = PAPER_SEEDS) -> str:
    """A Markdown table, one line per row and variant."""
    lines = [
        "| experiment | variant | metric | seeds | measured here | paper (its number) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        found = ", ".join(map(str, row.values)) or "-"
        if len(row.values) < len(seeds):
            found += f" (of {len(seeds)})"
        lines.append(
            f"| {row.experiment} | {row.variant} | {row.metric or '-'} | {found} "
            f"| {row.measured()} | {row.paper_value()} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mocosfl.table", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=Path, default=Path("logs"), help="folder to search")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=list(PAPER_SEEDS), help="seeds to average"
    )
    parser.add_argument(
        "--metric",
        default=None,
        help="metric to report, e.g. attack/mse (default: test/linear_top1, else test/knn_top1)",
    )
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: --runs {args.runs} is not a folder", file=sys.stderr)
        return 2
    rows = summarize(find_runs(args.runs), args.seeds, args.metric)
    if not rows:
        print(
            f"no finished run of a paper row (metrics.json with an experiment_name and one of "
            f"the seeds {', '.join(map(str, args.seeds))}) under {args.runs}",
            file=sys.stderr,
        )
        return 1
    print(format_table(rows, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
