"""What ``benchmarks/study.py`` makes of its runs: one record a run (read from the run directory),
the mean and standard deviation a row, the markdown table, the plot and the W&B run.

Imports neither torch nor mocosfl, so that ``study.py --markdown`` prints a table in a second.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

# The cost/* metrics of metrics.json (mocosfl/costs/report.py, costs/flssl.py) a record keeps.
COSTS = (
    "client_params",
    "client_mflops_per_image",
    "client_forward_mflops_per_image",
    "client_activation_mb_per_image",
    "client_activation_mb_per_batch",
    "upload_mb_per_client_epoch",
    "download_mb_per_client_epoch",
    "upload_mb_per_client_run",
    "download_mb_per_client_run",
    "steps_per_epoch",
)
ACCURACIES = ("test/knn_top1", "test/linear_top1", "val/linear_top1", "val/knn_top1")
HEADER = (
    "method",
    "test kNN top-1 (%)",
    "gain over init (points)",
    "linear top-1 (%)",
    "client params",
    "client MFLOPs/img",
    "activation MB (client batch)",
    "MB sent/epoch (client)",
    "wall min",
)


def read_curve(history: Path, images_per_step: int) -> list[dict[str, float]]:
    """The run's val kNN points (``val/knn_top1`` rows of its history.csv) by images processed."""
    with history.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/knn_top1")]
    return [
        {
            "step": int(r["step"]),
            "images": int(r["step"]) * images_per_step,
            "val_knn_top1": float(r["val/knn_top1"]),
        }
        for r in rows
    ]


def run_record(run_dir: Path, client_batch: int, images_per_step: int) -> dict[str, Any]:
    """The accuracies, the costs and the curve of a finished run."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    costs = {k: metrics[f"cost/{k}"] for k in COSTS if f"cost/{k}" in metrics}
    # What a client holds at its batch: FL-SSL methods log it, MocoSFL's is per image.
    costs.setdefault(
        "client_activation_mb_per_batch", costs["client_activation_mb_per_image"] * client_batch
    )
    return {
        **{k.replace("/", "_"): metrics.get(k) for k in ACCURACIES},
        "global_step": metrics["global_step"],
        "costs": costs,
        "curve": read_curve(run_dir / "history.csv", images_per_step),
    }


def mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per row: mean ± std over its seeds of the accuracies, of the test kNN at initialisation
    and of the gain over it, and of the wall time; the costs (the same for every seed: they
    depend on the config alone) and the mean curve, which starts at the val kNN at init."""
    rows: dict[str, Any] = {}
    for run in runs:
        rows.setdefault(run["row"], []).append(run)
    summary = {}
    for name, group in rows.items():
        points: dict[int, list[float]] = {}
        for run in group:
            for p in run["curve"]:
                points.setdefault(p["images"], []).append(p["val_knn_top1"])
        init = [r["knn_at_init"] for r in group]
        points[0] = [i["val"] for i in init if "val" in i]
        summary[name] = {
            "title": group[0]["title"],
            "family": group[0]["family"],
            "split": group[0]["split"],
            "overrides": group[0]["row_overrides"],
            "seeds": [r["seed"] for r in group],
            "test_knn_top1": mean_std([r["test_knn_top1"] for r in group]),
            "test_knn_top1_at_init": mean_std([i["test"] for i in init]),
            "test_knn_gain": mean_std(
                [r["test_knn_top1"] - i["test"] for r, i in zip(group, init)]
            ),
            "test_linear_top1": mean_std([r["test_linear_top1"] for r in group]),
            "wall_min": mean_std([r["wall_s"] / 60 for r in group]),
            "costs": group[0]["costs"],
            "curve": [{"images": k, **mean_std(v)} for k, v in sorted(points.items()) if v],
        }
    return summary


def _pm(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One list of cells a row, in HEADER's order. The centralized reference has no client:
    its cost cells are n/a (the run is one client of the cut-1 split, whose costs it logs)."""
    out = []
    for name, row in summary.items():
        c = row["costs"]
        costs = (
            [
                f"{c['client_params']:,.0f}",
                f"{c['client_mflops_per_image']:,.1f}",
                f"{c['client_activation_mb_per_batch']:,.2f}",
                f"{c['upload_mb_per_client_epoch']:,.1f}",
            ]
            if row["split"]
            else ["n/a"] * 4
        )
        wall = row["wall_min"]["mean"]
        knn = [_pm(row["test_knn_top1"]), _pm(row["test_knn_gain"])]
        cells = [name, *knn, _pm(row["test_linear_top1"]), *costs]
        out.append([*cells, f"{wall:.1f}"])
    return out


def markdown(study: dict[str, Any]) -> str:
    """The table of a study JSON, with a line that says what was measured."""
    s = study["settings"]
    counts = sorted({len(row["seeds"]) for row in study["rows"].values()})
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    images = s["steps"] * s["images_per_step"]
    lines = [
        f"Measured here ({study.get('machine', 'this machine')}): ResNet-18 width {s['width']}, "
        f"{s['steps']} steps of {s['images_per_step']} images ({images:,} images a run), "
        f"{s['data']}; test kNN and linear probe: mean ± std over "
        f"{seeds} seed(s); the gain is over the same network at random initialisation, seed by "
        "seed. Costs per client; MB = 2^20 bytes.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(cells) + " |" for cells in table_rows(study["rows"])),
    ]
    return "\n".join(lines)


STYLES = {"centralized": "-", "mocosfl": "-", "legacy": "--", "fl-ssl": ":"}


def plot(study: dict[str, Any], path: Path) -> None:
    """Val kNN top-1 against images processed, one line a row (its seeds' mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = plt.get_cmap("tab20").colors  # 12 rows: the default cycle of 10 would repeat
    for i, (name, row) in enumerate(study["rows"].items()):
        curve = row["curve"]
        if not curve:
            continue
        x = [p["images"] / 1000 for p in curve]
        style = STYLES[row["family"]]
        color = "black" if row["family"] == "centralized" else colors[i % len(colors)]
        ax.plot(x, [p["mean"] for p in curve], style, marker="o", ms=3, color=color, label=name)
    s = study["settings"]
    ax.set_xlabel("images processed (thousands)")
    ax.set_ylabel("val kNN top-1 (%)")
    title = f"ResNet-18 width {s['width']}, {s['steps']} steps, mean over seeds\n{s['data']}"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_wandb(study: dict[str, Any], png: Path, work: Path) -> None:
    """The table and the plot in one W&B run (WANDB_MODE is honoured: offline, disabled)."""
    import wandb

    run = wandb.init(
        project="mocosfl",
        job_type="study",
        name=f"study-w{study['settings']['width']}-s{study['settings']['steps']}",
        config=study["settings"],
        dir=str(work),
    )
    table = wandb.Table(columns=list(HEADER), data=table_rows(study["rows"]))
    run.log({"study/table": table, "study/curves": wandb.Image(str(png))})
    run.finish()
