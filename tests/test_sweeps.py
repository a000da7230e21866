"""Sweeps: W&B sweep files, the Optuna search, Hydra multiruns and the table of finished runs.

No W&B server is needed: every sweep parameter is rendered as W&B's agent renders it and
composed with Hydra together with the sweep's fixed overrides. A two-job multirun and a two-trial
Optuna search run for real on tiny settings, and `mocosfl.table` summarises the multirun.
"""

import functools
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from omegaconf import OmegaConf, open_dict
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args  # the agent's own rendering

from mocosfl import table
from mocosfl.data import build_datamodule
from mocosfl.report import paper_runs
from mocosfl.report.markdown import SHOWN_DIFFERENCES, format_table
from mocosfl.report.paper_runs import find_runs
from mocosfl.report.row_config import FROM_CHOICE
from mocosfl.report.rows import PAPER_SEEDS, summarize

from helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "conf" / "sweep").glob("*.yaml"))
# Top-level keys of W&B's sweep configuration format.
SWEEP_KEYS = {"program", "method", "metric", "parameters", "command", "name", "description"}
SWEEP_KEYS |= {"project", "entity", "run_cap", "early_terminate"}
DISTRIBUTIONS = {"uniform", "log_uniform_values", "int_uniform", "q_uniform", "normal"}
# What a sweep may optimise: logged every epoch by the kNN monitor and the linear-probe callback
# (test_multirun_jobs_log_every_metric_a_sweep_optimises checks that runs write them).
OPTIMISABLE = {"val/knn_top1", "val/linear_top1"}
LAUNCH = ["${env}", "${interpreter}", "-m", "mocosfl.train"]
TINY_RUN = [*TINY, "trainer.max_steps=6", "callbacks.knn.k=5"]


def load_sweep(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def candidates(spec: dict[str, Any]) -> list[Any]:
    """The values of one parameter worth composing: all listed ones, or a range's two ends."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def agent_arguments(sweep: dict[str, Any]) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """(parameters, command-line arguments) of the runs the agent would start.

    Every point of a grid; for a search, each candidate of each parameter with the others at
    their first candidate.
    """
    options = {key: candidates(spec) for key, spec in sweep["parameters"].items()}
    if sweep["method"] == "grid":
        points = [dict(zip(options, values)) for values in itertools.product(*options.values())]
    else:
        first = {key: values[0] for key, values in options.items()}
        points = [{**first, key: v} for key, values in options.items() for v in values]
    fixed = sweep["command"][len(LAUNCH) : -1]
    for point in points:
        rendered = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
        yield point, [*fixed, *rendered["args_no_hyphens"]]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_a_wandb_sweep_that_runs_the_hydra_app(path):
    sweep = load_sweep(path)
    assert set(sweep) <= SWEEP_KEYS
    assert sweep["method"] in {"grid", "random", "bayes"}
    assert sweep["metric"]["goal"] in {"maximize", "minimize"}
    assert sweep["metric"]["name"] in OPTIMISABLE
    # The agent reads `program` for every run even though the command runs the module.
    assert (ROOT / sweep["program"]).is_file()
    assert sweep["command"][: len(LAUNCH)] == LAUNCH
    assert sweep["command"][-1] == "${args_no_hyphens}"  # key=value, as Hydra wants them
    assert sweep["parameters"]
    for name, spec in sweep["parameters"].items():
        assert len({"value", "values", "distribution"} & set(spec)) == 1, name
        if "distribution" in spec:
            assert sweep["method"] != "grid", f"a grid cannot enumerate {name}'s distribution"
            assert spec["distribution"] in DISTRIBUTIONS and spec["min"] < spec["max"], name


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_run_of_a_sweep_composes_as_the_agent_starts_it(compose_train, monkeypatch, path):
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    monkeypatch.setenv("WANDB_RUN_ID", "run456")
    built_models = set()
    for point, arguments in agent_arguments(load_sweep(path)):
        cfg = compose_train(arguments)
        for key, value in point.items():
            got = cfg.experiment_name if key == "experiment" else OmegaConf.select(cfg, key)
            assert got == value, f"{key}={value} did not arrive: {got}"
        # Every run gets its own directory, so parallel agents never share one.
        assert HydraConfig.get().run.dir == str(ROOT / "logs/sweeps/sweep123/run456")
        build_datamodule(cfg)  # checks the data settings
        model_key = OmegaConf.to_yaml(cfg.model, resolve=True)
        if model_key not in built_models:
            built_models.add(model_key)
            hydra.utils.instantiate(cfg.model)


@pytest.mark.parametrize("value", [True, False])
def test_agent_rendered_booleans_reach_hydra_as_booleans(compose_train, value):
    args = create_sweep_command_args({"args": {"sfl.sync_momentum": {"value": value}}})
    assert args["args_no_hyphens"] == [f"sfl.sync_momentum={value}"]  # True / False
    assert compose_train(args["args_no_hyphens"]).sfl.sync_momentum is value


def test_optuna_search_composes_and_its_whole_space_is_valid(compose_train):
    cfg = compose_train(["hparams_search=knn_optuna"])
    sweeper = HydraConfig.get().sweeper
    assert sweeper._target_.endswith("optuna_sweeper.OptunaSweeper")
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/knn_top1"
    assert HydraConfig.get().mode.name == "MULTIRUN"
    parser = OverridesParser.create()
    for key, space in sweeper.params.items():
        sweep = parser.parse_override(f"{key}={space}").value()
        values = sweep.list if isinstance(sweep, ChoiceSweep) else [sweep.start, sweep.end]
        for value in values:
            assert OmegaConf.select(compose_train([f"{key}={value}"]), key) == value


def run_train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mocosfl.train", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled", **(env or {})},
    )


@pytest.fixture(scope="module")
def multirun_dir(tmp_path_factory) -> Path:
    """Two jobs of a Hydra multirun (cut 1 and cut 2), named by an interpolated row name."""
    sweep_dir = tmp_path_factory.mktemp("multirun")
    result = run_train(
        "-m",
        *TINY_RUN,
        "+experiment_name=tiny_cut${sfl.cut_layer}",
        "sfl.cut_layer=1,2",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.mark.slow  # a fresh Python process or a notebook kernel each
def test_multirun_runs_every_job_to_the_end(multirun_dir):
    saved = sorted(multirun_dir.glob("*/metrics.json"))
    assert [p.parent.name for p in saved] == ["0", "1"]
    for path in saved:
        assert json.loads(path.read_text())["global_step"] == 6


@pytest.mark.slow  # a fresh Python process or a notebook kernel each
def test_multirun_jobs_log_every_metric_a_sweep_optimises(multirun_dir):
    metrics = json.loads((multirun_dir / "0" / "metrics.json").read_text())
    assert OPTIMISABLE <= set(metrics)


@pytest.mark.slow  # a fresh Python process or a notebook kernel each
def test_table_prints_a_row_per_job_of_the_multirun(multirun_dir):
    result = subprocess.run(
        [sys.executable, "-m", "mocosfl.table", "--runs", str(multirun_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| experiment | variant | metric |")
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert set(rows) == {"tiny_cut1", "tiny_cut2"}
    assert "| fixed | test/linear_top1 | 1234 (of 3) |" in rows["tiny_cut1"]


@pytest.mark.slow  # a fresh Python process or a notebook kernel each
def test_optuna_search_runs_its_trials(tmp_path):
    tiny = [o for o in TINY_RUN if not o.startswith("sfl.queue_size=")]  # searched
    result = run_train(
        "hparams_search=knn_optuna",
        "hydra.sweeper.n_trials=2",
        *tiny,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.glob("*/metrics.json"))) == 2
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"sfl.lr", "sfl.temperature", "sfl.queue_size"}
    assert 0.0 <= best["best_value"] <= 100.0


@pytest.mark.slow  # a fresh Python process or a notebook kernel each
class FailsInFit(L.Callback):
    """A crash inside the fit, after W&B started."""

    def on_train_start(self, trainer, pl_module) -> None:
        raise RuntimeError("a crash inside the fit")


def test_failing_run_finishes_wandb_and_exits_nonzero_so_agents_go_on(tmp_path):
    result = run_train(
        *TINY_RUN,
        "logger=wandb",
        "+callbacks.crash._target_=test_sweeps.FailsInFit",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={
            "WANDB_MODE": "offline",
            "WANDB_DIR": str(tmp_path),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "W&B never started"


# -- mocosfl.table on hand-made run directories ------------------------------------------------
ROW = "table3_c10_iid_100clients_cut1"
# Hand-made numbers for ROW, with an attack MSE that its entry in conf/paper/numbers.yaml lacks.
PAPER = {"top1": 87.29, "attack_mse": 0.039, "attack_mse_std": 0.005}


@functools.cache
def composed_config(
    name: str, preset: str, seed: int, overrides: tuple[str, ...]
) -> tuple[str, str]:
    """``.hydra/config.yaml`` of a run started as ``experiment=<name> sfl=<preset> seed=<seed>
    <overrides>`` (composed, not resolved, as Hydra saves it) and the run's ``module`` choice."""
    arguments = [f"experiment={name}", f"sfl={preset}", f"seed={seed}", *overrides]
    with hydra.initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra.compose("train", overrides=arguments, return_hydra_config=True)
    module = cfg.hydra.runtime.choices.module
    with open_dict(cfg):
        del cfg.hydra
    return OmegaConf.to_yaml(cfg), module


def fake_run(
    root: Path,
    name: str | None,
    seed: int,
    top1: float,
    preset: str = "legacy",
    age: int = 0,
    overrides: tuple[str, ...] = (),
    **metrics: float,
) -> Path:
    """A finished run as train.py and Hydra leave it; ``age`` orders runs by mtime.

    A run of a row in conf/experiment is started with ``experiment=<name>`` and ``overrides``;
    any other name is set by hand, in a config of only its name and seed.
    """
    run = root / f"{name}-{preset}-{seed}-{age}"
    (run / ".hydra").mkdir(parents=True)
    choices = {"sfl": preset}
    if name and (ROOT / "conf" / "experiment" / f"{name}.yaml").is_file():
        config, choices["module"] = composed_config(name, preset, seed, tuple(overrides))
        choices["experiment"] = name
    else:
        config = yaml.safe_dump({"seed": seed, "experiment_name": name})
    (run / ".hydra" / "config.yaml").write_text(config)
    hydra_yaml = {"hydra": {"runtime": {"choices": choices}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_yaml))
    arguments = [f"experiment={name}", f"sfl={preset}", f"seed={seed}", *overrides]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(arguments))
    record = {"seed": seed, "test/linear_top1": top1, "test/knn_top1": top1 - 5, **metrics}
    (run / "metrics.json").write_text(json.dumps(record))
    os.utime(run / "metrics.json", (1000 + age, 1000 + age))
    return run


def test_table_averages_the_paper_seeds_per_row_and_variant(tmp_path, monkeypatch):
    monkeypatch.setattr(paper_runs, "paper_numbers", lambda: {ROW: PAPER})
    row = ROW
    for seed, top1 in zip(PAPER_SEEDS, (80.0, 82.0, 90.0)):
        fake_run(tmp_path, row, seed, top1, **{"attack/mse": 0.04})
    fake_run(tmp_path, row, 1236, 84.0, age=1, **{"attack/mse": 0.04})  # a later re-run counts
    fake_run(tmp_path, row, 7, 10.0)  # not a paper seed
    fake_run(tmp_path, row, 1234, 70.0, preset="fixed")
    fake_run(tmp_path, None, 1234, 10.0)  # not a paper row
    assert not any(run.differences for run in find_runs(tmp_path))
    rows = summarize(find_runs(tmp_path))
    assert [(r.experiment, r.variant) for r in rows] == [(row, "fixed"), (row, "legacy")]
    fixed, legacy = rows
    assert legacy.values == {1234: 80.0, 1235: 82.0, 1236: 84.0}
    assert legacy.measured() == "82.00 ± 2.00" and legacy.paper_value() == "87.29"
    assert fixed.measured() == "70.00 (1 seed)"
    text = format_table(rows)
    assert f"| {row} | fixed | test/linear_top1 | 1234 (of 3) | 70.00 (1 seed) | 87.29 |" in text

    mse = summarize(find_runs(tmp_path), metric="attack/mse")[1]
    assert mse.measured() == "0.04 ± 0.00"
    assert mse.paper_value() == "0.039 ± 0.005 (paper's protocol: attack_paper/mse)"
    fake_run(tmp_path, row, 1234, 80.0, age=2, **{"attack_paper/mse": 0.03})
    paper = summarize(find_runs(tmp_path), metric="attack_paper/mse")[1]
    assert paper.values == {1234: 0.03} and paper.paper_value() == "0.039 ± 0.005"


FL_ROW = "table2_c10_noniid_5clients_flmoco"  # an FL-SSL baseline: module=flmoco, no paper number
BYOL_ROW = "table2_c10_noniid_5clients_fedbyol"


def test_table_shows_the_method_of_an_fl_ssl_row(tmp_path, capsys):
    for seed, top1 in zip(PAPER_SEEDS, (70.0, 72.0, 74.0)):
        fake_run(tmp_path, FL_ROW, seed, top1, preset="fixed")
    fake_run(tmp_path, ROW, 1234, 80.0)
    runs = find_runs(tmp_path)
    assert {run.experiment: (run.method, run.differences) for run in runs} == {
        FL_ROW: ("flmoco", []),
        ROW: ("mocosfl", []),
    }
    fl, moco = summarize(runs)
    assert (fl.experiment, fl.method, fl.variant) == (FL_ROW, "flmoco", "fixed")
    assert fl.measured() == "72.00 ± 2.00" and fl.paper_value() == "not in the paper"
    assert table.main(["--runs", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "| experiment | method | variant | metric | seeds | measured here | paper (its number) |",
        "|---|---|---|---|---|---|---|",
    ]
    assert lines[2] == (
        f"| {FL_ROW} | flmoco | fixed | test/linear_top1 | 1234, 1235, 1236 | 72.00 ± 2.00 "
        "| not in the paper |"
    )
    assert lines[3].startswith(f"| {ROW} | mocosfl | legacy | test/linear_top1 | 1234 (of 3) |")
    # A MocoSFL row alone keeps its table as it was: no method column.
    assert format_table([moco]).splitlines()[0].startswith("| experiment | variant |")


def test_table_matches_a_fedbyol_row_to_the_papers_fl_byol(tmp_path):
    fake_run(tmp_path, BYOL_ROW, 1234, 80.0, preset="fixed")
    (run,) = find_runs(tmp_path)
    assert (run.method, run.differences, run.paper["top1"]) == ("fedbyol", [], 83.34)
    (row,) = summarize([run])
    assert row.paper_value() == "83.34"


def test_table_reads_a_row_name_saved_literally_and_the_numbers_file(tmp_path):
    run = fake_run(tmp_path, ROW, 1234, 80.0)
    config = run / ".hydra" / "config.yaml"
    saved = OmegaConf.to_container(OmegaConf.load(config))
    assert saved["experiment_name"] == FROM_CHOICE  # unresolved, as Hydra saves it
    (new,) = find_runs(tmp_path)
    saved["experiment_name"] = ROW  # as runs saved it before rows took it from the choice
    config.write_text(yaml.safe_dump(saved))
    (old,) = find_runs(tmp_path)
    for found in (new, old):
        assert (found.experiment, found.differences) == (ROW, [])
        (row,) = summarize([found])
        assert row.paper_value() == "87.29"  # conf/paper/numbers.yaml's, not in the run's config


def test_table_prefers_the_evaluation_of_a_runs_checkpoint(tmp_path):
    run = fake_run(tmp_path / "train", "row", 1234, 80.0)
    evaluation = tmp_path / "eval" / "run1"
    evaluation.mkdir(parents=True)
    record = {
        "test/linear_top1": 86.5,
        "seed": 1234,
        "eval": "linear",
        "ckpt_path": str(run / "checkpoints" / "final.ckpt"),
    }
    (evaluation / "metrics.json").write_text(json.dumps(record))
    (only,) = summarize(find_runs(tmp_path))
    assert only.values == {1234: 86.5}


def test_table_falls_back_to_knn_and_says_when_nothing_is_found(tmp_path, capsys):
    run = fake_run(tmp_path, "row", 1234, 80.0)
    record = json.loads((run / "metrics.json").read_text())
    del record["test/linear_top1"]
    (run / "metrics.json").write_text(json.dumps(record))
    assert summarize(find_runs(tmp_path))[0].metric == "test/knn_top1"
    assert table.main(["--runs", str(tmp_path / "nothing-here")]) == 2
    (tmp_path / "empty").mkdir()
    assert table.main(["--runs", str(tmp_path / "empty")]) == 1
    assert "no finished run" in capsys.readouterr().err


def test_table_counts_only_runs_with_the_rows_settings(tmp_path, capsys):
    fake_run(tmp_path, ROW, 1234, 80.0)
    # Where the data lives, how it is loaded and on what hardware change no result.
    quiet = ("data.num_workers=0", "trainer=cpu", "logger=csv", "num_threads=1", "data.root=/x")
    fake_run(tmp_path, ROW, 1235, 82.0, overrides=quiet)
    debug = fake_run(
        tmp_path, ROW, 1236, 10.0, overrides=("data=synthetic", "trainer.max_steps=10")
    )
    fewer = fake_run(tmp_path, ROW, 1236, 50.0, age=1, overrides=("sfl.num_clients=5",))
    runs = find_runs(tmp_path)
    (only,) = summarize(runs)
    assert only.values == {1234: 80.0, 1235: 82.0}  # neither 1236 run counts, not even the newer
    by_path = {run.path: run for run in runs}
    # Resolved values: the keys that interpolate sfl.num_clients differ with it.
    assert by_path[fewer].differences == [
        f"{group}.num_clients: 5 vs 100" for group in ("sfl", "module")
    ]
    assert "trainer.max_steps: 10 vs 100000" in by_path[debug].differences
    assert "data.name: synthetic vs cifar10" in by_path[debug].differences

    assert table.main(["--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table_part, listed = out.split("\n\nnot the paper's settings:\n")
    assert f"| {ROW} | legacy | test/linear_top1 | 1234, 1235 (of 3) |" in table_part
    lines = listed.rstrip().splitlines()
    assert len(lines) == 2 and all(line.startswith("  ") for line in lines)
    debug_line = next(line for line in lines if str(debug) in line)
    assert debug_line.startswith(f"  {debug} ({ROW}, legacy): data.name: synthetic vs cifar10; ")
    shown = debug_line.split(": ", 1)[1].split("; ")
    extra = len(by_path[debug].differences) - SHOWN_DIFFERENCES
    assert len(shown) == SHOWN_DIFFERENCES + 1 and shown[-1] == f"+{extra} more"


def test_table_without_a_matching_run_lists_the_others(tmp_path, capsys):
    fake_run(tmp_path, ROW, 1234, 10.0, overrides=("trainer.max_steps=10",))
    assert table.main(["--runs", str(tmp_path)]) == 0  # reported, not an error
    captured = capsys.readouterr()
    assert captured.out.startswith("not the paper's settings:\n  ")
    assert captured.out.rstrip().endswith("): trainer.max_steps: 10 vs 100000")
    assert "no finished run of a paper row with its settings" in captured.err


def test_table_flags_a_run_whose_row_config_is_gone(tmp_path):
    run = fake_run(tmp_path, ROW, 1234, 80.0)
    choices = {"hydra": {"runtime": {"choices": {"sfl": "legacy", "experiment": "table9_gone"}}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(choices))
    (found,) = find_runs(tmp_path)
    assert found.differences == ["experiment: table9_gone vs (no conf/experiment/table9_gone.yaml)"]
    assert summarize([found]) == []


def test_a_run_from_before_the_plan_counts_with_its_variant(tmp_path):
    """A legacy run saved before sfl.variant, the federated plan (data.num_clients and the
    other mirrors of sfl, no sfl.code_epoch_steps) and sfl.loss (sfl.symmetric, sfl.eval_feature)
    has the row's settings and is reported as legacy; a run whose sfl.variant says legacy is
    reported so, whatever its preset's name."""
    old = fake_run(tmp_path, ROW, 1234, 80.0)
    config = OmegaConf.load(old / ".hydra" / "config.yaml")
    del config.sfl.variant, config.sfl.code_epoch_steps
    for key in ("num_clients", "clients_per_step", "client_batch_size", "sync_every", "pool"):
        config.data[key] = f"${{sfl.{key}}}"
    config.sfl.symmetric, config.sfl.eval_feature = "legacy", "head"
    del config.sfl.loss, config.module.loss
    config.module.symmetric = "${sfl.symmetric}"
    config.callbacks.knn.feature = "${sfl.eval_feature}"
    (old / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(config))
    named = fake_run(tmp_path, ROW, 1235, 82.0, preset="fixed", overrides=("sfl.variant=legacy",))
    by_path = {run.path: run for run in find_runs(tmp_path)}
    assert by_path[old].variant == "legacy" and by_path[old].differences == []
    assert by_path[named].variant == "legacy"
