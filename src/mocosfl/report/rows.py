"""The rows of the paper's table: each row and variant reduced to its metric over the paper's seeds.

Runs are grouped by row and variant (``legacy``, as published, or ``fixed``:
:mod:`mocosfl.report.paper_runs`) and each group is reported as the mean and sample standard
deviation over the paper scripts' seeds (1234, 1235, 1236), beside the paper's number. Only runs
with their row's settings count (:mod:`mocosfl.report.row_config`). A row knows its method (the
runs' ``module=`` choice): MocoSFL, or an FL-SSL baseline of Table 2 (``flmoco``, ``fedbyol``,
``fedema``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mocosfl.report.paper_runs import DEFAULT_METHOD, Run

PAPER_SEEDS = (1234, 1235, 1236)
# The decimals the paper prints its numbers with (their standard deviations the same).
DECIMALS = {"top1": 2, "attack_mse": 3}
# Reported metric when none is asked for: the first one that every run of the row has.
DEFAULT_METRICS = ("test/linear_top1", "test/knn_top1")
# The attack metrics the paper's attack MSE is shown beside, with what the column adds to it: only
# attack_paper/mse was measured as the paper measured (docs/differences.md, attack protocol).
ATTACK_MSE_METRICS = {"attack_paper/mse": "", "attack/mse": " (paper's protocol: attack_paper/mse)"}
# What stands for a number the paper does not give, unless its entry says otherwise (``missing``).
NOT_FOUND = "not found"


@dataclass
class Row:
    """One line of the table: a row of the paper, one variant, one metric over its seeds."""

    experiment: str
    variant: str
    metric: str | None
    values: dict[int, float]
    paper: dict[str, Any]
    method: str = DEFAULT_METHOD

    def measured(self) -> str:
        """The measured metric: the mean ± the sample standard deviation over the seeds."""
        if not self.values:
            return "no metric common to all seeds"
        values = list(self.values.values())
        mean = statistics.fmean(values)
        if len(values) == 1:
            return f"{mean:.2f} (1 seed)"
        return f"{mean:.2f} ± {statistics.stdev(values):.2f}"

    def paper_value(self) -> str:
        """The paper's number for this metric: attack MSE, else the linear top-1 it reports.
        Beside ``attack/mse`` it says that the paper measured with its own protocol."""
        key = "attack_mse" if self.metric in ATTACK_MSE_METRICS else "top1"
        if self.paper.get(key) is None:
            return missing_text(self.paper)
        return paper_text(self.paper, key) + ATTACK_MSE_METRICS.get(self.metric, "")


def missing_text(paper: Mapping[str, Any]) -> str:
    """What the table shows for a number the paper does not give: "not found", or the entry's
    ``missing`` (the FL-MoCo rows: "not in the paper")."""
    return str(paper.get("missing") or NOT_FOUND)


def paper_text(paper: Mapping[str, Any], key: str) -> str:
    """The paper's ``key`` (``top1`` or ``attack_mse``) of one row as the paper prints it,
    ``value ± std`` where it gives a standard deviation; :func:`missing_text` where it gives
    none."""
    value, std = paper.get(key), paper.get(f"{key}_std")
    if value is None:
        return missing_text(paper)
    digits = DECIMALS[key]
    return f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


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
    """Group ``runs`` with their row's settings by (row, method, variant), keep ``seeds``, and
    reduce each group to one Row."""
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.seed in seeds and not run.differences:
            groups[(run.experiment, run.method, run.variant)].append(run)
    rows = []
    for (experiment, method, variant), group in sorted(groups.items()):
        by_seed = latest_per_seed(group)
        name = choose_metric(list(by_seed.values()), metric)
        values = {
            seed: float(run.metrics[name])
            for seed, run in sorted(by_seed.items())
            if name is not None and name in run.metrics
        }
        paper = next((run.paper for run in by_seed.values() if run.paper), {})
        rows.append(Row(experiment, variant, name, values, paper, method))
    return rows
