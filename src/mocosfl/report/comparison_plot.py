"""The bar chart of a comparison: one bar per finished run, best on top (``compare.png``)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from mocosfl.report.comparison import BEST_MARK, format_metric, format_override, lower_is_better
from mocosfl.report.jobs import Job

PLOT_LABEL_WIDTH = 48  # characters a line of a bar's label


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
