"""The paper's Table 1 for any config: ``python -m mocosfl.overhead experiment=<row>``.

Composes the config ``python -m mocosfl.train`` would run (conf/overhead.yaml), builds its split
model, measures the client and works out each client's traffic per epoch and over the run
(:mod:`mocosfl.costs`); nothing is trained. Prints the table next to the paper's Table 1
(docs/paper.md, "Communication") and writes ``overhead.json`` into the run directory.

An FL-SSL module (``module=flmoco``: the whole network on each client, see
:class:`mocosfl.costs.FLSSLModule`) gets the same accounting for the whole network, no latents,
beside the paper's FL-SSL row and its FL-SSL client (590.6 MFLOPs an image, more than 1100 MB).
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
from mocosfl.costs import (
    MB,
    MFLOPS,
    FLSSLModule,
    FLSSLRunCosts,
    RunCosts,
    cut_traffic_per_image,
    flssl_run_costs,
    run_costs,
)
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
# The paper's FL-SSL row (Zhuang 2022): 5 clients, batch 128, 500 local epochs with a sync every
# 5 = 100 syncs; and its text's claim about that client (ResNet-18, batch 128).
PAPER_FLSSL = "FL-SSL (Zhuang 2022)"
PAPER_FLSSL_SETTING = (
    "paper's FL-SSL row: CIFAR-10, ResNet-18, 5 clients, batch 128, 100 syncs;\n"
    "  weights = one model a sync; nothing crosses a cut"
)
NO_PAPER_FLSSL_ROW = "the paper's Table 1 has FL-SSL for ResNet-18, width 64, 32 px only"
PAPER_FLSSL_CLIENT = {"mflops_per_image": 590.6, "memory_mb_more_than": 1100, "batch_size": 128}
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


def traffic_lines(cfg: DictConfig, costs: RunCosts | FLSSLRunCosts) -> list[str]:
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
    paper = paper_rows(cfg)
    return table1_rows(costs, paper, PAPER_SETTING if paper else NO_PAPER_ROW)


def table1_rows(
    costs: RunCosts | FLSSLRunCosts, paper: dict[str, tuple[float, float, float]], note: str
) -> list[str]:
    """Table 1's columns (MB over the run) for ``costs``, the ``paper`` rows and a ``note``."""
    run = costs.whole_run
    measured = [_mb(v) for v in (run.model_sync, run.cut_layer, run.total)]
    rows = [
        ["Table 1, whole run (MB)", "Weights", "Latents", "Total", "vs FL-SSL"],
        ["this config (measured, computed)", *measured, ""],
    ]
    baseline = PAPER_TABLE1[PAPER_FLSSL][2]
    for name, (weights, latents, total) in paper.items():
        cells = [f"{v:,.1f}" for v in (weights, latents, total)]
        rows.append([f"paper: {name}", *cells, f"{total / baseline:.3f}x"])
    return [*aligned_columns(rows), f"  {note}"]


def format_report(cfg: DictConfig, costs: RunCosts) -> str:
    """The measured costs, the traffic table and the paper's Table 1 next to it."""
    sections = (client_lines(cfg, costs), traffic_lines(cfg, costs), table1_lines(cfg, costs))
    return "\n\n".join("\n".join(lines) for lines in sections)


def is_flssl(cfg: DictConfig) -> bool:
    """Whether ``cfg.module`` is an FL-SSL method (:class:`mocosfl.costs.FLSSLModule`: the whole
    network on each client, FedAvg of whole models, e.g. ``module=flmoco``)."""
    return issubclass(hydra.utils.get_class(cfg.module._target_), FLSSLModule)


def is_paper_flssl_client(cfg: DictConfig) -> bool:
    """The paper's FL-SSL network: ResNet-18 of width 64 on 32 px images (CIFAR)."""
    return (cfg.model.arch, cfg.model.width, cfg.data.image_size) == ("resnet18", 64, 32)


def flssl_client_lines(cfg: DictConfig, costs: FLSSLRunCosts) -> list[str]:
    """An FL-SSL run's setting, what its client model costs and the paper's FL-SSL client."""
    sfl, on = cfg.sfl, costs.online
    views, models = costs.views, costs.exchanged_models
    sync = f"FedAvg every {sfl.sync_every} steps" if sfl.sync_every else "no FedAvg"
    momentum = costs.momentum
    flops = f"{views} x forward+backward {on.forward_backward_flops / MFLOPS:,.2f}"
    memory = f"{views} x {on.activation_bytes / MB:.3f} (saved for backward + output)"
    if momentum is not None:
        flops += f" + {views} x momentum forward {momentum.forward_flops / MFLOPS:,.2f}"
        memory += f" + {views} x {momentum.latent_bytes / MB:.3f} (momentum output only)"
    lines = [
        f"Cost per client: {cfg.model.arch} (width {cfg.model.width}, {cfg.model.norm}), "
        f"FL-SSL ({cfg.module._target_.rsplit('.', 1)[-1]}): the whole network on each client, "
        f"{cfg.data.name} {cfg.data.image_size}px, {views} view{'s' if views > 1 else ''} an image",
        f"  {sfl.num_clients} clients, {sfl.clients_per_step} a step x {sfl.client_batch_size} "
        f"image(s), {sync}; {costs.steps_per_epoch} steps an epoch, {costs.total_steps} steps = "
        f"{costs.epochs:.1f} epochs",
        "",
        f"  client parameters      {on.params:,} (the model it trains)",
        f"  FedAvg exchanges       {costs.exchanged_numel:,} values each way a sync "
        f"({models} model{'s' if models > 1 else ''}); no latents",
        f"  client MFLOPs          {costs.training_flops_per_image / MFLOPS:,.2f} a training "
        f"image = {flops}",
        f"  client activations     {costs.training_activation_bytes_per_image / MB:.3f} MB a "
        f"training image = {memory}",
        f"  at the client batch    {costs.training_activation_bytes_per_batch / MB:,.1f} MB "
        f"({costs.client_batch_size} images)",
    ]
    if not is_paper_flssl_client(cfg):
        return lines
    paper = PAPER_FLSSL_CLIENT
    rows = [
        ["FL-SSL client", "MFLOPs an image", "memory (MB) a client batch"],
        ["this config: a forward", f"{on.forward_flops / MFLOPS:,.1f}", ""],
        [
            f"this config: training, batch {costs.client_batch_size}",
            f"{costs.training_flops_per_image / MFLOPS:,.1f}",
            f"{costs.training_activation_bytes_per_batch / MB:,.1f}",
        ],
        [
            f"paper: ResNet-18, batch {paper['batch_size']}",
            f"{paper['mflops_per_image']:,.1f}",
            f"> {paper['memory_mb_more_than']:,}",
        ],
    ]
    note = (
        "  ours: 2 FLOPs a multiply-add of convs and matrix products; memory = activations "
        "only (no weights, optimizer or queue)"
    )
    return [*lines, "", *aligned_columns(rows), note]


def flssl_overhead(cfg: DictConfig) -> tuple[str, FLSSLRunCosts, dict[str, Any]]:
    """An FL-SSL config's report, costs and the paper's numbers for ``overhead.json``. The
    module is built as ``mocosfl.train`` builds it, with one client (a client's costs do not
    depend on how many there are)."""
    epoch_steps = steps_per_epoch(cfg)
    module = hydra.utils.instantiate(
        cfg.module, split_model=hydra.utils.instantiate(cfg.model), num_clients=1, client_sizes=[1]
    )
    costs = flssl_run_costs(
        module.cost_models(cfg.sfl.sync_momentum),
        (3, cfg.data.image_size, cfg.data.image_size),
        plan_of(cfg),
        steps_per_epoch=epoch_steps,
        total_steps=total_steps(cfg.trainer, epoch_steps),
        bytes_per_element=cfg.bytes_per_element,
    )
    paper_net = is_paper_flssl_client(cfg)
    rows = {PAPER_FLSSL: PAPER_TABLE1[PAPER_FLSSL]} if paper_net else {}
    table = table1_rows(costs, rows, PAPER_FLSSL_SETTING if paper_net else NO_PAPER_FLSSL_ROW)
    sections = (flssl_client_lines(cfg, costs), traffic_lines(cfg, costs), table)
    columns = ("weights", "latents", "total")
    paper = {"paper_table1_mb": {name: dict(zip(columns, row)) for name, row in rows.items()}}
    if paper_net:
        paper["paper_flssl_client"] = PAPER_FLSSL_CLIENT
    return "\n\n".join("\n".join(lines) for lines in sections), costs, paper


@with_num_threads
def overhead(cfg: DictConfig) -> dict[str, Any]:
    """Measure and compute the config's costs, print the table, write ``overhead.json``;
    returns its content."""
    if is_flssl(cfg):
        report, costs, paper = flssl_overhead(cfg)
        print(report)
        record = {"metrics": costs.metrics(), "costs": costs.summary(), **paper}
        return write_record(cfg, record)
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
    return write_record(cfg, record)


def write_record(cfg: DictConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``record`` as ``overhead.json`` into the run directory, print the job's summary;
    returns ``record``."""
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
