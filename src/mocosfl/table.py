"""Collect finished runs into the paper's table: ``python -m mocosfl.table --runs logs/``.

A training run is a directory with ``metrics.json`` (written at the end of training) and Hydra's
``.hydra/config.yaml`` and ``.hydra/hydra.yaml``; runs of a paper row carry its name in
``experiment_name``. ``conf/experiment/table_base.yaml`` sets it to the run's ``experiment=``
choice, ``${hydra:runtime.choices.experiment}``, which ``config.yaml`` keeps unresolved and only
Hydra's runtime resolves, so that name is read from the choices in ``hydra.yaml``; a literal name
(a run from before, or one set by hand) is read as it is. Runs are grouped by row and variant --
``legacy`` when trained with a legacy ``sfl`` preset (as published), else ``fixed`` -- and each
group is reported as the mean and sample standard deviation over the paper scripts' seeds (1234,
1235, 1236), as a Markdown table, beside the paper's number.

The paper's numbers come from ``conf/paper/numbers.yaml``, looked up by the row config the run
claims, never from the run's own config (whose ``paper`` node, filled from the same file by the
``mocosfl.paper`` resolver, is logged with the run but is unresolved in ``config.yaml`` too).
``--paper-markdown`` prints the README's table of paper rows from that file.

An evaluation of a run's checkpoint (``python -m mocosfl.eval``, whose ``metrics.json`` names its
``ckpt_path``) found under ``--runs`` overrides that run's metrics of the same name: its linear
probe has the paper's settings, the training callback's a cheap one.

A run counts toward a paper row only if it has the row's settings: its resolved config must
equal the one Hydra composes from ``conf/`` for ``experiment=<row> sfl=<its preset> seed=<its
seed>`` and nothing else, in the keys that decide the experiment (``COMPARED``: data, model, sfl,
module, the step/epoch budget and FedAvg), less ``IGNORED`` -- where the data lives and how it is
loaded, and the client engine (the same maths computed per client or stacked). Every other key
(paths, logger, seed, tags, num_threads, the progress bar and checkpoint callbacks, the trainer's
accelerator, devices and precision, ckpt_path) cannot make a run another experiment. Runs that
differ (a 10-step synthetic debug run started with ``experiment=<row>``, say) are listed below the
table under "not the paper's settings:", one a line with the keys that differ. A run whose
``experiment_name`` names no file in ``conf/experiment`` (set by hand) has no row config to check
and is reported under its name as before.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from mocosfl.utils.resolvers import paper_numbers
from mocosfl.utils.run import CONFIG_DIR
from mocosfl.utils.upgrade import upgrade_run_config

PAPER_SEEDS = (1234, 1235, 1236)
# A row's experiment_name as conf/experiment/table_base.yaml sets it, kept so in config.yaml.
FROM_CHOICE = "${hydra:runtime.choices.experiment}"
# The decimals the paper prints its numbers with (their standard deviations the same).
DECIMALS = {"top1": 2, "attack_mse": 3}
# What a row's command adds for data that the user supplies (docs/paper.md, Data).
USER_DATA = {"imagenet12": " data.root=<imagenet-12>"}
# Reported metric when none is asked for: the first one that every run of the row has.
DEFAULT_METRICS = ("test/linear_top1", "test/knn_top1")
# The attack metrics the paper's attack MSE is shown beside, with what the column adds to it: only
# attack_paper/mse was measured as the paper measured (docs/differences.md, attack protocol).
ATTACK_MSE_METRICS = {"attack_paper/mse": "", "attack/mse": " (paper's protocol: attack_paper/mse)"}
# The keys (with everything under them) that make a run the row's experiment, and those among
# them that do not change it: where the data lives and how it is loaded or batched for
# evaluation, and the client engine (loop or vmap: the same update computed two ways).
COMPARED = (
    "data",
    "model",
    "sfl",
    "module",
    "trainer.max_steps",
    "trainer.max_epochs",
    "callbacks.fedavg",
)
IGNORED = (
    "data.root",
    "data.download",
    "data.num_workers",
    "data.eval_batch_size",
    "sfl.client_engine",
    "module.client_engine",
    "sfl.variant",  # what the run is reported as, not how it trains
)
SHOWN_DIFFERENCES = 3  # per run in the "not the paper's settings" list, then "+N more"
ABSENT = "(absent)"


@dataclass
class Run:
    """One finished training run, with the metrics of any later evaluation of it merged in."""

    path: Path
    experiment: str
    variant: str
    seed: int
    metrics: dict[str, Any]
    paper: dict[str, Any] = field(default_factory=dict)
    # "key: run value vs row value" for every compared key that differs from the row's config.
    differences: list[str] = field(default_factory=list)


@dataclass
class Row:
    """One line of the table: a row of the paper, one variant, one metric over its seeds."""

    experiment: str
    variant: str
    metric: str | None
    values: dict[int, float]
    paper: dict[str, Any]

    def measured(self) -> str:
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
            return "not found"
        return paper_text(self.paper, key) + ATTACK_MSE_METRICS.get(self.metric, "")


def paper_text(paper: Mapping[str, Any], key: str) -> str:
    """The paper's ``key`` (``top1`` or ``attack_mse``) of one row as the paper prints it,
    ``value ± std`` where it gives a standard deviation; "not found" where it gives none."""
    value, std = paper.get(key), paper.get(f"{key}_std")
    if value is None:
        return "not found"
    digits = DECIMALS[key]
    return f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _load_yaml(path: Path) -> Any:
    return OmegaConf.load(path) if path.is_file() else OmegaConf.create({})


def _leaves(cfg: DictConfig, key: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, resolved value) of every leaf under ``key``; a list is one leaf.

    Resolved one key at a time, so that a value only Hydra's runtime can resolve (``${hydra:..}``)
    reads as None instead of failing the whole comparison.
    """
    value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    if isinstance(value, DictConfig):
        for child in value:
            yield from _leaves(cfg, f"{key}.{child}")
    elif isinstance(value, ListConfig):
        try:
            yield key, OmegaConf.to_container(value, resolve=True)
        except Exception:
            yield key, OmegaConf.to_container(value, resolve=False)
    else:
        yield key, value


def settings(cfg: DictConfig) -> dict[str, Any]:
    """The resolved values of the COMPARED keys of ``cfg``, less the IGNORED ones."""
    return {
        key: value
        for compared in COMPARED
        for key, value in _leaves(cfg, compared)
        if not any(key == ignored or key.startswith(f"{ignored}.") for ignored in IGNORED)
    }


def compose_train(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, outside Hydra's runtime (unresolved)."""
    # Restores any Hydra instance of the caller (a test, a notebook) on exit.
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


@functools.cache
def row_settings(experiment: str, preset: str, seed: int) -> dict[str, Any]:
    """The settings of the row ``experiment`` as ``conf/`` composes it for this preset and seed."""
    return settings(compose_train([f"experiment={experiment}", f"sfl={preset}", f"seed={seed}"]))


def experiment_name(cfg: DictConfig, choices: DictConfig | dict) -> str | None:
    """The name the run is grouped under: a row's ``experiment=`` choice where its
    ``experiment_name`` is ``FROM_CHOICE``, else that name resolved within the run's config (a
    literal one, or one that interpolates the run's keys); None when it has none (not a paper
    row, or a base config's missing name)."""
    if OmegaConf.to_container(cfg).get("experiment_name") == FROM_CHOICE:
        return choices.get("experiment")
    name = OmegaConf.select(cfg, "experiment_name", throw_on_resolution_failure=False)
    return str(name) if name else None


def row_name(cfg: DictConfig, choices: DictConfig | dict) -> str | None:
    """The row config the run claims: its ``experiment=`` choice, else a row file named like its
    ``experiment_name``; None when it has neither (a name set by hand)."""
    return choices.get("experiment") or experiment_name(cfg, choices)


def differences(run: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """``key: run value vs row value`` for every key whose values differ, in the row's order."""
    keys = [*row, *(key for key in run if key not in row)]
    return [
        f"{key}: {run.get(key, ABSENT)} vs {row.get(key, ABSENT)}"
        for key in keys
        if run.get(key, ABSENT) != row.get(key, ABSENT)
    ]


def check_row(cfg: DictConfig, choices: DictConfig | dict, seed: int) -> list[str]:
    """How the run's settings differ from its row's (empty: it has the paper's settings)."""
    name = row_name(cfg, choices)
    if name is None or not (Path(CONFIG_DIR) / "experiment" / f"{name}.yaml").is_file():
        if choices.get("experiment"):  # the row's file is gone: nothing says what it set
            return [f"experiment: {name} vs (no conf/experiment/{name}.yaml)"]
        return []
    try:
        row = row_settings(name, str(choices.get("sfl", "default")), seed)
    except HydraException as exc:  # e.g. an sfl preset that no longer exists
        return [f"row config: {str(exc).splitlines()[0]}"]
    # A run from an older layout is compared as today's configs write the same settings.
    current = OmegaConf.create(upgrade_run_config(OmegaConf.to_container(cfg)))
    return differences(settings(current), row)


def load_run(run_dir: Path, metrics: dict[str, Any]) -> Run | None:
    """The paper-row run in ``run_dir``, whose ``metrics.json`` holds ``metrics``; else None."""
    cfg = _load_yaml(run_dir / ".hydra" / "config.yaml")
    hydra_cfg = _load_yaml(run_dir / ".hydra" / "hydra.yaml")
    choices = OmegaConf.select(hydra_cfg, "hydra.runtime.choices", default=None) or {}
    experiment = experiment_name(cfg, choices)
    if not experiment:
        return None
    preset = choices.get("sfl", "default")
    seed = int(metrics.get("seed", cfg.get("seed", -1)))
    return Run(
        path=run_dir,
        experiment=experiment,
        # Runs from before sfl.variant: their preset's name says it.
        variant=OmegaConf.select(cfg, "sfl.variant", default=None)
        or ("legacy" if "legacy" in str(preset) else "fixed"),
        seed=seed,
        metrics=metrics,
        paper=paper_numbers().get(row_name(cfg, choices), {}),
        differences=check_row(cfg, choices, seed),
    )


def find_runs(root: Path) -> list[Run]:
    """Every paper-row run under ``root``, with the metrics of its evaluations merged in."""
    runs: dict[Path, Run] = {}
    evaluations: list[tuple[Path, dict[str, Any]]] = []
    # Oldest first, so that a later evaluation of the same checkpoint wins.
    for path in sorted(root.rglob("metrics.json"), key=lambda p: p.stat().st_mtime):
        record = json.loads(path.read_text())
        if "ckpt_path" in record:
            evaluations.append((Path(record["ckpt_path"]), record))
        elif (run := load_run(path.parent, record)) is not None:
            runs[run.path.resolve()] = run
    for ckpt_path, record in evaluations:
        # <run dir>/checkpoints/<name>.ckpt
        run = runs.get(ckpt_path.resolve().parent.parent)
        if run is not None:
            run.metrics.update({k: v for k, v in record.items() if "/" in k})
    return list(runs.values())


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
    """Group ``runs`` with their row's settings by (row, variant), keep ``seeds``, and reduce each
    group to one Row."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.seed in seeds and not run.differences:
            groups[(run.experiment, run.variant)].append(run)
    rows = []
    for (experiment, variant), group in sorted(groups.items()):
        by_seed = latest_per_seed(group)
        name = choose_metric(list(by_seed.values()), metric)
        values = {
            seed: float(run.metrics[name])
            for seed, run in sorted(by_seed.items())
            if name is not None and name in run.metrics
        }
        paper = next((run.paper for run in by_seed.values() if run.paper), {})
        rows.append(Row(experiment, variant, name, values, paper))
    return rows


def format_table(rows: Sequence[Row], seeds: Sequence[int] = PAPER_SEEDS) -> str:
    """A Markdown table, one line per row and variant."""
    lines = [
        "| experiment | variant | metric | seeds | measured here | paper (its number) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        found = ", ".join(map(str, row.values)) or "-"
        if len(row.values) < len(seeds):
            found += f" (of {len(seeds)})"
        lines.append(
            f"| {row.experiment} | {row.variant} | {row.metric or '-'} | {found} "
            f"| {row.measured()} | {row.paper_value()} |"
        )
    return "\n".join(lines)


def format_mismatches(runs: Iterable[Run]) -> str:
    """The runs left out for not having their row's settings, one a line with how they differ;
    empty when there are none."""
    lines = []
    for run in sorted((r for r in runs if r.differences), key=lambda r: str(r.path)):
        shown = run.differences[:SHOWN_DIFFERENCES]
        if len(run.differences) > SHOWN_DIFFERENCES:
            shown.append(f"+{len(run.differences) - SHOWN_DIFFERENCES} more")
        lines.append(f"  {run.path} ({run.experiment}, {run.variant}): {'; '.join(shown)}")
    return "\n".join(["not the paper's settings:", *lines]) if lines else ""


def row_command(name: str, paper: Mapping[str, Any]) -> str:
    """The README's command for the row ``name``: its seeds as published; for a Table 4 row, per
    seed, its stage-1 expert first (with the row's cut layer and share of the target data)."""
    if paper["table"] != "table4":
        seeds = ",".join(map(str, PAPER_SEEDS))
        data = USER_DATA.get(paper["dataset"], "")
        return f"`python -m mocosfl.train -m experiment={name} sfl=legacy seed={seeds}{data}`"
    cfg = compose_train([f"experiment={name}"])
    return (
        f"`python -m mocosfl.train experiment=taressfl_stage1 sfl.cut_layer={cfg.sfl.cut_layer} "
        f"data.target_fraction={cfg.expert_target_fraction} seed=<seed>`, then "
        f"`python -m mocosfl.train experiment={name} seed=<seed> "
        "init_from=<stage-1 run>/checkpoints/final.ckpt`"
    )


def paper_markdown() -> str:
    """The README's table of the paper's rows (between its ``paper-table`` markers): one line a
    row of ``conf/paper/numbers.yaml``, in its order, with the paper's numbers and the command
    that reproduces the row."""
    lines = ["| row | paper's linear top-1 (%) | command |", "|---|---|---|"]
    for name, paper in paper_numbers().items():
        number = paper_text(paper, "top1")
        if paper.get("attack_mse") is not None:
            number += f" (attack MSE {paper_text(paper, 'attack_mse')})"
        lines.append(f"| {paper['label']} | {number} | {row_command(name, paper)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
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
