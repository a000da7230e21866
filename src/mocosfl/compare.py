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
import sys
from collections.abc import Sequence
from pathlib import Path

from mocosfl.errors import ConfigError
from mocosfl.report.comparison import (
    DEFAULT_METRICS,
    choose_metrics,
    format_comparison,
    format_metric,
    lower_is_better,
    sort_jobs,
    split_overrides,
)
from mocosfl.report.comparison_plot import plot_comparison
from mocosfl.report.jobs import Job, find_jobs
from mocosfl.utils.summary import print_summary


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
    """The command line: compare the runs under the given folders; the exit status."""
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
