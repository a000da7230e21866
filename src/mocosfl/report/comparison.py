"""The runs side by side as text: a column per varying override and per metric, best run first;
a method column where a run is not MocoSFL's and its method is not an override of every run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mocosfl.report.jobs import Job

DEFAULT_METRICS = (
    "train/loss",
    "val/knn_top1",
    "test/knn_top1",
    "test/linear_top1",
    "attack/mse",
    "attack_paper/mse",
)
# Metrics where lower is better; every other one (accuracies) is better higher.
LOWER_IS_BETTER = ("loss", "mse")
ACCURACY_MARKS = ("top1", "top5", "acc")  # shown with 2 decimals, everything else with 4
MISSING = "-"
BEST_MARK = "*"
DEFAULT_METHOD = "mocosfl"  # conf/train.yaml's module choice


def lower_is_better(metric: str) -> bool:
    """Whether a smaller ``metric`` is the better one (a loss or an MSE)."""
    return any(mark in metric for mark in LOWER_IS_BETTER)


def format_metric(metric: str, value: Any) -> str:
    """A metric's value: accuracies with 2 decimals, others (loss, MSE) with 4; text as is."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if any(mark in metric for mark in ACCURACY_MARKS):
        return f"{value:.2f}"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:,.0f}"


def format_override(value: str) -> str:
    """An override's value, floats shortened (Optuna writes them with 16 digits)."""
    try:
        number = float(value)
    except ValueError:
        return value if value else "(deleted)"
    return f"{number:.4g}" if "." in value or "e" in value.lower() else value


def choose_metrics(jobs: Sequence[Job], asked: Sequence[str] | None) -> list[str]:
    """The metrics asked for, else the DEFAULT_METRICS some finished run has."""
    if asked:
        return list(asked)
    present = {key for job in jobs if job.finished for key in job.metrics}
    return [metric for metric in DEFAULT_METRICS if metric in present]


def split_overrides(jobs: Sequence[Job]) -> tuple[list[str], list[str]]:
    """(overrides every run has with the same value, keys whose values vary between runs)."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    common, varying = [], []
    for key in keys:
        values = {job.overrides.get(key) for job in jobs}
        if len(values) == 1 and None not in values:
            value = values.pop()
            common.append(f"{key}={value}" if value or not key.startswith("~") else key)
        else:
            varying.append(key)
    return common, varying


def show_method(jobs: Sequence[Job]) -> bool:
    """Whether the table needs a method column: some run is not MocoSFL's (an FL-SSL baseline,
    say ``experiment=table2_..._flmoco``) and not every run names its method as an override."""
    other = any(job.method not in (None, DEFAULT_METHOD) for job in jobs)
    return other and not all("module" in job.overrides for job in jobs)


def sort_jobs(jobs: Sequence[Job], metric: str | None) -> list[Job]:
    """Finished runs best first by ``metric`` (runs without it after them), then the unfinished."""

    def key(job: Job) -> tuple[int, float]:
        value = job.metrics.get(metric) if job.finished and metric else None
        if not isinstance(value, (int, float)) or math.isnan(value):  # NaN: a diverged run
            return (1 if job.finished else 2, 0.0)
        return (0, value if lower_is_better(metric) else -value)

    return sorted(jobs, key=key)  # stable: ties keep path order


def _is_number(cell: str) -> bool:
    try:
        float(cell.replace(",", ""))
    except ValueError:
        return False
    return True


def format_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns two spaces apart, numbers right-aligned, text left-aligned, a rule under the
    header."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    # The first column names the runs (job numbers, often): text, whatever it looks like.
    numeric = [False] + [
        all(_is_number(row[i]) or row[i] == MISSING for row in rows) for i in range(1, len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric)
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths]), *map(line, rows)])


def format_comparison(jobs: Sequence[Job], metrics: Sequence[str]) -> str:
    """``common: ...`` (when any), then the table of ``jobs`` in their given order."""
    common, varying = split_overrides(jobs)
    method = ["method"] if show_method(jobs) else []
    header = ["  run", *method, *varying, *metrics]  # past the column of best marks
    rows = []
    for job in jobs:
        name = f"{BEST_MARK if job.best else ' '} {job.name}"
        if not job.finished:
            name += " (unfinished)"
        methods = [job.method or MISSING] if method else []
        cells = [
            format_override(job.overrides[k]) if k in job.overrides else MISSING for k in varying
        ]
        values = [format_metric(m, (job.metrics or {}).get(m)) for m in metrics]
        rows.append([name, *methods, *cells, *values])
    table = format_rows(header, rows)
    return f"common: {' '.join(common)}\n{table}" if common else table
