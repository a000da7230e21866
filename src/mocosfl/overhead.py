"""The paper's Table 1 for any config: ``python -m mocosfl.overhead experiment=<row>``.

Composes the config ``python -m mocosfl.train`` would run (conf/overhead.yaml), builds its split
model, measures the client and works out each client's traffic per epoch and over the run
(:mod:`mocosfl.costs`); nothing is trained. Prints the table next to the paper's Table 1
(docs/paper.md, "Communication") and writes ``overhead.json`` into the run directory.
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import mocosfl  # noqa: F401  (registers the config resolvers)
from mocosfl.cli import hydra_entry
from mocosfl.config import validate_config
from mocosfl.costs import MB, MFLOPS, RunCosts, cut_traffic_per_image, run_costs
from mocosfl.data import build_datamodule, plan_of
from mocosfl.errors import ConfigError
from mocosfl.utils.run import with_num_threads
from mocosfl.utils.summary import print_summary

# The paper's Table 1 (docs/paper.md, Communication): CIFAR-10, ResNet-18, per client, MB =
# 2**20 bytes; 1000 clients, 200 syncs, 50 images a client in each of 200 epochs. The original's
# formulas: weights = one client model a sync, latents = 2 x images x latent size (halved for
# TAResSFL).
# {scheme: (weights, latents, total)}
PAPER_TABLE1: dict[str, tuple[float, float, float]] = {
    "FL-SSL (Zhuang 2022)": (8269.2, 0.0, 8269.2),
    "MocoSFL-1": (1.4, 5000.0, 5001.4),
    "MocoSFL-3": (57.9, 5000.0, 5057.9),
    "MocoSFL-1/-3 + TAResSFL": (0.0, 39.1, 39.1),
}
PAPER_SETTING = (
    "paper's setting: 1000 clients, 200 syncs, 50 images a client per epoch, 200 epochs;\n"
    "  weights = one client model a sync, latents = 2 latents an image (halved for TAResSFL)"
)
NO_PAPER_ROW = "the paper's Table 1 has no row for this client model (ResNet-18, width 64, cut 1-2)"
# The paper's MocoSFL-L counts conv layers on the client: cut 1 = MocoSFL-1, cut 2 = MocoSFL-3.
PAPER_SCHEME_OF_CUT = {1: "MocoSFL-1", 2: "MocoSFL-3"}
# Training images of the data sets whose size is known without reading them.
KNOWN_TRAIN_SPLIT = {"cifar10": 50_000, "cifar100": 50_000}


def steps_per_epoch(cfg: DictConfig) -> int:
    """The run's epoch in steps: from the settings for CIFAR (no files needed), else from the
    data module itself (synthetic images take a fraction of a second, a folder is read once; a
    subclass such as TAResSFL's expert data defines its own epoch)."""
    datamodule = build_datamodule(cfg)
    settings = datamodule.settings
    if datamodule.partitions_train_split and settings.name in KNOWN_TRAIN_SPLIT:
        images = settings.split_sizes(KNOWN_TRAIN_SPLIT[settings.name])[1]
        return math.ceil(images / datamodule.plan.server_batch_size)
    datamodule.setup("fit")
    return datamodule.steps_per_epoch


def total_steps(trainer_cfg: DictConfig, epoch_steps: int) -> int:
    """Steps the run trains: ``trainer.max_steps`` or ``trainer.max_epochs``, whichever ends it
    first (as Lightning's Trainer; -1 or null = no limit)."""
    limits = []
    if trainer_cfg.get("max_steps") is not None and trainer_cfg.max_steps >= 0:
        limits.append(trainer_cfg.max_steps)
    if trainer_cfg.get("max_epochs") is not None and trainer_cfg.max_epochs >= 0:
        limits.append(trainer_cfg.max_epochs * epoch_steps)
    if not limits:
        raise ConfigError("the run never ends: set trainer.max_steps or trainer.max_epochs")
    return int(min(limits))


def paper_rows(cfg: DictConfig) -> dict[str, tuple[float, float, float]]:
    """The paper's Table 1 rows that match this config's client (the paper's ResNet-18 cut after
    1 or 2 layers), and its FL baseline."""
    scheme = PAPER_SCHEME_OF_CUT.get(cfg.sfl.cut_layer)
    if (cfg.model.arch, cfg.model.width) != ("resnet18", 64) or scheme is None:
        return {}
    if cfg.model.get("bottleneck"):
        scheme = "MocoSFL-1/-3 + TAResSFL"
    return {name: PAPER_TABLE1[name] for name in (scheme, "FL-SSL (Zhuang 2022)")}


def _mb(value: float) -> str:
    """Bytes as MB, small amounts with more decimals (a sync of a 1,856-parameter client)."""
    mb = value / MB
    return f"{mb:,.1f}" if mb >= 10 else f"{mb:.3f}"


def client_lines(cfg: DictConfig, costs: RunCosts) -> list[str]:
    """The run's setting and what one client model costs."""
    c, sfl = costs.client, cfg.sfl
    views, online = cut_traffic_per_image(costs.loss, costs.clients_train)
    sync = f"FedAvg every {sfl.sync_every} steps" if sfl.sync_every else "no FedAvg"
    return [
        f"Cost per client: {cfg.model.arch} (width {cfg.model.width}, {cfg.model.norm}), "
        f"cut {sfl.cut_layer}, {cfg.data.name} {cfg.data.image_size}px, "
        f"loss={costs.loss}{'' if costs.clients_train else ', frozen clients'}",
        f"  {sfl.num_clients} clients, {sfl.clients_per_step} a step x {sfl.client_batch_size} "
        f"image(s), {sync}{' (momentum copies too)' if sfl.sync_momentum else ''}; "
        f"{costs.steps_per_epoch} steps an epoch, {costs.total_steps} steps = "
        f"{costs.epochs:.1f} epochs",
        "",
        f"  client parameters      {c.params:,}",
        f"  latent per image       {c.latent_numel:,} values",
        f"  client MFLOPs          {costs.training_flops_per_image / MFLOPS:,.2f} a training "
        f"image = {online} x forward+backward {c.forward_backward_flops / MFLOPS:,.2f} + "
        f"{views - online} x forward {c.forward_flops / MFLOPS:,.2f}",
        f"  client activations     {costs.training_activation_bytes_per_image / MB:.3f} MB a "
        f"training image = {online} x {c.activation_bytes / MB:.3f} (saved for backward + "
        f"latent) + {views - online} x {c.latent_bytes / MB:.3f} (latent only)",
    ]


def aligned_columns(rows: Sequence[Sequence[str]], gap: int = 3) -> list[str]:
    """Rows of cells (the first row is the header) as lines of aligned columns: the first
    left-aligned, the others right-aligned, each as wide as its widest cell, with ``gap`` spaces
    between columns, so that two numbers never run together however large they grow."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = "".join(" " * gap + cell.rjust(w) for cell, w in zip(cells[1:], widths[1:]))
        return f"  {first}{rest}".rstrip()

    return [line(row) for row in rows]


def traffic_lines(cfg: DictConfig, costs: RunCosts) -> list[str]:
    """MB an average client sends and receives, per epoch and over the run."""
    header = ["MB", "latents up", "grads down", "model up", "model down", "upload", "download"]
    rows = [[*header, "total"]]
    for label, t in (
        (f"per epoch ({costs.steps_per_epoch:,} steps)", costs.per_epoch),
        (f"whole run ({costs.total_steps:,} steps)", costs.whole_run),
    ):
        values = (t.latents_up, t.gradients_down, t.model_up, t.model_down, t.upload, t.download)
        rows.append([label, *(_mb(v) for v in values), _mb(t.total)])
    note = (
        f"  traffic per client, averaged over all clients; {cfg.bytes_per_element} B a value, "
        "MB = 2^20 B (as the paper)"
    )
    return [note, *aligned_columns(rows)]


def table1_lines(cfg: DictConfig, costs: RunCosts) -> list[str]:
    """Table 1's columns for this config, and the paper's rows for the same client."""
    run = costs.whole_run
    measured = [_mb(v) for v in (run.model_sync, run.cut_layer, run.total)]
    rows = [
        ["Table 1, whole run (MB)", "Weights", "Latents", "Total", "vs FL-SSL"],
        ["this config (measured, computed)", *measured, ""],
    ]
    baseline = PAPER_TABLE1["FL-SSL (Zhuang 2022)"][2]
    paper = paper_rows(cfg)
    for name, (weights, latents, total) in paper.items():
        cells = [f"{v:,.1f}" for v in (weights, latents, total)]
        rows.append([f"paper: {name}", *cells, f"{total / baseline:.3f}x"])
    return [*aligned_columns(rows), f"  {PAPER_SETTING if paper else NO_PAPER_ROW}"]


def format_report(cfg: DictConfig, costs: RunCosts) -> str:
    """The measured costs, the traffic table and the paper's Table 1 next to it."""
    sections = (client_lines(cfg, costs), traffic_lines(cfg, costs), table1_lines(cfg, costs))
    return "\n\n".join("\n".join(lines) for lines in sections)


@with_num_threads
def overhead(cfg: DictConfig) -> dict[str, Any]:
    """Measure and compute the config's costs, print the table, write ``overhead.json``;
    returns its content."""
    epoch_steps = steps_per_epoch(cfg)
    split_model = hydra.utils.instantiate(cfg.model)
    costs = run_costs(
        split_model.client,
        (3, cfg.data.image_size, cfg.data.image_size),
        plan_of(cfg),  # its code epoch unknown: rounds of sfl.sync_every steps
        steps_per_epoch=epoch_steps,
        total_steps=total_steps(cfg.trainer, epoch_steps),
        loss=cfg.sfl.loss,
        sync_momentum=cfg.sfl.sync_momentum,
        clients_train=cfg.sfl.client_lr > 0,
        bytes_per_element=cfg.bytes_per_element,
    )
    print(format_report(cfg, costs))
    columns = ("weights", "latents", "total")
    paper = {name: dict(zip(columns, row)) for name, row in paper_rows(cfg).items()}
    record = {"metrics": costs.metrics(), "costs": costs.summary(), "paper_table1_mb": paper}
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "overhead.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print_summary("overhead", [("run dir", out_dir), ("file written", path.name)])
    return record


def checked_overhead(cfg: DictConfig) -> dict[str, Any]:
    """:func:`overhead` after the config's types and ranges are checked."""
    validate_config(cfg)
    return overhead(cfg)


main = hydra_entry("overhead", checked_overhead)

if __name__ == "__main__":
    main()
