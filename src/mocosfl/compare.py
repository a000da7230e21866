"""Compare any set of runs side by side: ``python -m mocosfl.compare <runs or multirun dirs...>``.

Every directory given is searched for runs: a finished run has ``metrics.json``, an unfinished or
failed one only Hydra's ``.hydra`` folder. One table has a row per run, a column per command-line
override that varies between the runs (read from ``.hydra/overrides.yaml``; the overrides all runs
share are printed once above it) and a column per final metric, sorted by one metric: best first
(highest accuracy, lowest loss or MSE). The trials of an Optuna search (``hparams_search=...``)
are the jobs of its multirun; the best one of ``optimization_results.yaml`` is marked ``*``. A bar
chart of the sort metric per run is saved as ``compare.png`` in the first directory (or
``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mocosfl.errors import ConfigError
from mocosfl.utils.summary import print_summary

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
PLOT_LABEL_WIDTH = 48  # characters a line of a bar's label


@dataclass
class Job:
    """One run: its directory, its command-line overrides, and its final metrics (None while
    unfinished)."""

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, Any] | None
    best: bool = False
    name: str = ""

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
    return Job(path=run_dir, overrides=overrides, metrics=metrics)


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


def lower_is_better(metric: str) -> bool:
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
    header = ["  run", *varying, *metrics]  # past the column of best marks
    rows = []
    for job in jobs:
        name = f"{BEST_MARK if job.best else ' '} {job.name}"
        if not job.finished:
            name += " (unfinished)"
        cells = [
            format_override(job.overrides[k]) if k in job.overrides else MISSING for k in varying
        ]
        values = [format_metric(m, (job.metrics or {}).get(m)) for m in metrics]
        rows.append([name, *cells, *values])
    table = format_rows(header, rows)
    return f"common: {' '.join(common)}\n{table}" if common else table


def plot_comparison(jobs: Sequence[Job], metric: str, varying: Sequence[str], out: Path) -> Path:
    """A horizontal bar per finished run with ``metric``, best on top, labelled by run name and
    its varying overrides; saved to ``out``."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed (batch jobs, CI)
    import matplotlib.pyplot as plt

    shown = [j for j in jobs if j.finished and isinstance(j.metrics.get(metric), (int, float))]
    labels = [_plot_label(job, varying) for job in shown]
    values = [float(j.metrics[metric]) for j in shown]
    # Sized to the labels, so that tight_layout can fit them (bbox_inches="tight" on save too).
    label_lines = sum(label.count("\n") + 1 for label in labels) or 1
    widest = max((len(line) for label in labels for line in label.splitlines()), default=10)
    fig, ax = plt.subplots(
        figsize=(5 + 0.07 * widest, 1.2 + 0.22 * label_lines + 0.15 * len(shown))
    )
    colors = ["tab:orange" if j.best else "tab:blue" for j in shown]
    ax.barh(range(len(shown)), values, color=colors)
    ax.set_yticks(range(len(shown)), labels, fontsize="small")
    ax.invert_yaxis()  # the table's order: best on top
    for i, value in enumerate(values):
        ax.annotate(
            format_metric(metric, value),
            (value, i),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
        )
    direction = "lower is better" if lower_is_better(metric) else "higher is better"
    ax.set_xlabel(f"{metric} ({direction})")
    ax.set_title(f"{len(shown)} runs by {metric}")
    ax.margins(x=0.15)  # room for the value labels at the bars' ends
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def _plot_label(job: Job, varying: Sequence[str]) -> str:
    """The run's name and its varying overrides, wrapped so that long ones stay readable."""
    settings = " ".join(
        f"{key}={format_override(job.overrides[key])}" for key in varying if key in job.overrides
    )
    name = f"{BEST_MARK}{job.name}" if job.best else job.name
    return "\n".join([name, *textwrap.wrap(settings, PLOT_LABEL_WIDTH)])


def _best_line(job: Job, metric: str | None) -> str | None:
    """``name  metric=value  (path)`` of the first run of the sorted table, if it has one."""
    if metric is None or not job.finished or metric not in job.metrics:
        return None
    return f"{job.name}  {metric}={format_metric(metric, job.metrics[metric])}  ({job.path})"


def _next_commands(best: Job) -> list[str]:
    """Evaluate the best run's checkpoint: train.py's final one, else the last periodic one."""
    ckpts = [best.path / "checkpoints" / f"{name}.ckpt" for name in ("final", "last")]
    ckpt = next((path for path in ckpts if path.is_file()), None)
    return [f"make eval CKPT={ckpt}"] if ckpt else []


def compare(
    dirs: Sequence[Path],
    metrics: Sequence[str] | None = None,
    sort: str | None = None,
    out: Path | None = None,
) -> int:
    """Print the table and the summary of the runs under ``dirs`` and save the plot."""
    jobs = find_jobs(dirs)
    shown = choose_metrics(jobs, metrics)
    sort = sort or (shown[0] if shown else None)
    if sort and sort not in shown:
        shown.append(sort)
    ordered = sort_jobs(jobs, sort)
    print(format_comparison(ordered, shown))
    plot = None
    if sort:
        _, varying = split_overrides(jobs)
        plot = plot_comparison(ordered, sort, varying, out or dirs[0] / "compare.png")
    finished = sum(job.finished for job in jobs)
    best = _best_line(ordered[0], sort)
    print_summary(
        "compare",
        [
            ("runs", f"{finished} finished, {len(jobs) - finished} unfinished"),
            (
                "sorted by",
                sort and f"{sort}, {'lowest' if lower_is_better(sort) else 'highest'} first",
            ),
            ("best", best),
            ("plot", plot),
        ],
        _next_commands(ordered[0]) if best else [],
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mocosfl.compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("dirs", type=Path, nargs="+", help="run or multirun directories")
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help=f"a metric to show, repeatable (default: those of {', '.join(DEFAULT_METRICS)} "
        "that the runs have)",
    )
    parser.add_argument(
        "--sort", default=None, help="metric to sort by, best first (default: the first shown)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to save the plot (default: <first dir>/compare.png)",
    )
    args = parser.parse_args(argv)
    try:
        return compare(args.dirs, args.metric, args.sort, args.out)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
