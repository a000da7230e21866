"""A run's record that needs no service: ``history.csv`` and ``curves.png`` in its directory.

:class:`HistoryLogger` is a Lightning logger that every training run has, beside W&B or CSV:
it receives every logged scalar at its step and appends one row a step to ``history.csv``
(columns ``step`` and the metric names, sorted; a cell is empty where a metric was not logged
at that step). A resumed run drops the rows from its resume step on, which it then logs again,
so the file reads as one uninterrupted run. :func:`plot_curves` draws loss, contrastive
accuracy and validation kNN against the step.
"""

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

CURVES = (
    ("train/loss", "train loss"),
    ("train/contrastive_acc", "contrastive accuracy (%)"),
    ("val/knn_top1", "val kNN top-1 (%)"),
)


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a ``history.csv``, empty cells left out."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]


class HistoryLogger(Logger):
    """Every logged scalar at its step, into ``<save_dir>/history.csv``."""

    def __init__(self, save_dir: str | Path) -> None:
        super().__init__()
        self.path = Path(save_dir) / "history.csv"
        self._rows = {int(r["step"]): r for r in read_history(self.path) if "step" in r}
        self._columns = sorted({k for r in self._rows.values() for k in r} - {"step"})
        self._resume_cut_done = False
        self._pending: int | None = None  # the step whose row may still grow

    @property
    def name(self) -> str:
        return "history"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run's config is in .hydra/ and in every checkpoint

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        step = int(step or 0)
        if not self._resume_cut_done:
            # A resumed run logs again from its checkpoint's step on.
            self._rows = {s: r for s, r in self._rows.items() if s < step}
            self._resume_cut_done = True
            self._rewrite()
        if self._pending is not None and step != self._pending:
            self._append(self._rows[self._pending])
        row = self._rows.setdefault(step, {"step": float(step)})
        scalars = {k: float(v) for k, v in metrics.items() if k != "epoch" and _is_scalar(v)}
        row.update(scalars)
        new = sorted(set(scalars) - set(self._columns))
        if new:
            self._columns = sorted({*self._columns, *new})
            self._rewrite(skip=step)
        self._pending = step

    def _append(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, ["step", *self._columns]).writerow(_cells(row))

    def _rewrite(self, skip: int | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, ["step", *self._columns])
            writer.writeheader()
            for s in sorted(self._rows):
                if s != skip:
                    writer.writerow(_cells(self._rows[s]))

    @rank_zero_only
    def save(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Write the row that was still open (called at the end, on a stop and by ``save``)."""
        if self._pending is not None:
            self._append(self._rows[self._pending])
            self._pending = None

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()
        if self._rows:
            plot_curves(self.path, self.path.with_name("curves.png"))


def _is_scalar(value: Any) -> bool:
    try:
        float(value)  # a one-element tensor or a number; NaN is kept (it is worth seeing)
    except (TypeError, ValueError, RuntimeError):
        return False
    return True


def _cells(row: dict[str, float]) -> dict[str, str]:
    return {k: (str(int(v)) if k == "step" else f"{v:.6g}") for k, v in row.items()}


def plot_curves(history_csv: Path, out_png: Path) -> Path | None:
    """Loss, contrastive accuracy and val kNN against the step; None when nothing was logged."""
    rows = read_history(history_csv)
    present = [(key, label) for key, label in CURVES if any(key in r for r in rows)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], present):
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle(history_csv.parent.name)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
