"""Collect finished runs into the paper's table: ``python -m mocosfl.table --runs logs/``.

Finished training runs of the paper's rows (a ``metrics.json`` and Hydra's ``.hydra`` folder, with
an ``experiment_name``: :mod:`mocosfl.report.paper_runs`) are grouped by row and variant
(``legacy`` or ``fixed``) and each group is reported as the mean and sample standard deviation
over the paper scripts' seeds (1234, 1235, 1236), as a Markdown table, beside the paper's number
from ``conf/paper/numbers.yaml`` (:mod:`mocosfl.report.rows`). An evaluation of a run's checkpoint
found under ``--runs`` overrides that run's metrics of the same name. A run counts toward a row
only if it has the row's settings (:mod:`mocosfl.report.row_config`); runs that differ (a 10-step
synthetic debug run started with ``experiment=<row>``, say) are listed below the table under "not
the paper's settings:", one a line with the keys that differ. A run whose ``experiment_name``
names no file in ``conf/experiment`` (set by hand) has no row config to check and is reported
under its name. ``--paper-markdown`` prints the README's table of paper rows from
``conf/paper/numbers.yaml`` (:mod:`mocosfl.report.markdown`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mocosfl.report.markdown import format_mismatches, format_table, paper_markdown
from mocosfl.report.paper_runs import find_runs
from mocosfl.report.rows import PAPER_SEEDS, summarize


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: print the table (or the README's table of rows); the exit status."""
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
        help="metric to report, e.g. attack_paper/mse (default: test/linear_top1, else "
        "test/knn_top1)",
    )
    parser.add_argument(
        "--paper-markdown",
        action="store_true",
        help="print the README's table of the paper's rows from conf/paper/numbers.yaml and exit",
    )
    args = parser.parse_args(argv)
    if args.paper_markdown:
        print(paper_markdown())
        return 0
    if not args.runs.is_dir():
        print(f"error: --runs {args.runs} is not a folder", file=sys.stderr)
        return 2
    runs = find_runs(args.runs)
    rows = summarize(runs, args.seeds, args.metric)
    if rows:
        print(format_table(rows, args.seeds))
    if mismatches := format_mismatches(runs):
        print(f"\n{mismatches}" if rows else mismatches)
    if not rows:
        print(
            f"no finished run of a paper row with its settings (metrics.json with an "
            f"experiment_name and one of the seeds {', '.join(map(str, args.seeds))}) "
            f"under {args.runs}",
            file=sys.stderr,
        )
        return 0 if mismatches else 1  # runs were found and reported: not a failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
