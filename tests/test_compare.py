"""mocosfl.compare on hand-made run directories: no training, a fraction of a second each."""

import json
import logging
from pathlib import Path

import pytest
import yaml

from mocosfl import compare

COMMON = ["data=synthetic", "trainer.max_steps=10", "~callbacks.progress"]


def fake_job(
    root: Path,
    name: str,
    overrides: list[str],
    metrics: dict[str, float] | None = None,
    module: str = "mocosfl",
) -> Path:
    """A run as Hydra and train.py leave it, of the method ``module``; without ``metrics`` it
    never finished."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    choices = {"hydra": {"runtime": {"choices": {"sfl": "default", "module": module}}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(choices))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps({"seed": 1234, "global_step": 10, **metrics}))
    return run


@pytest.fixture
def run_compare(capsys, caplog):
    """run_compare(*args) -> (exit code, stdout with the closing summary, stderr).

    The summary goes to the ``mocosfl`` logger where logging is set up (as pytest sets it up),
    else to stdout; both are read here.
    """
    caplog.set_level(logging.INFO, logger="mocosfl")

    def _run(*args: object) -> tuple[int, str, str]:
        caplog.clear()
        code = compare.main([str(arg) for arg in args])
        captured = capsys.readouterr()
        summary = "".join(record.getMessage() for record in caplog.records)
        return code, captured.out + summary, captured.err

    return _run


def table_lines(out: str) -> dict[str, list[str]]:
    """The table's rows by run name (the cells split on runs of two or more spaces)."""
    table = out.split("\n\n")[0].splitlines()
    start = next(i for i, line in enumerate(table) if line.startswith("  run"))
    rows = {}
    for line in table[start + 2 :]:
        cells = [c.strip() for c in line.strip().lstrip("*").split("  ") if c.strip()]
        rows[cells[0]] = cells
    return {"header": table[start].split(), **rows}


def grid(root: Path) -> Path:
    """A two-by-one grid multirun: jobs 0-2 finished, job 3 failed before writing metrics."""
    for i, (clients, loss, knn, mse) in enumerate([(5, 2.5, 40.0, 0.05), (20, 2.1, 55.5, 0.0312)]):
        metrics = {"train/loss": loss, "val/knn_top1": knn, "test/knn_top1": knn - 1}
        fake_job(
            root, str(i), [*COMMON, f"sfl.num_clients={clients}"], {**metrics, "attack/mse": mse}
        )
    fake_job(
        root, "2", [*COMMON, "sfl.num_clients=100"], {"train/loss": 1.9, "val/knn_top1": 61.25}
    )
    fake_job(root, "3", [*COMMON, "sfl.num_clients=1000"])
    return root


def test_compare_shows_varying_overrides_and_metrics_sorted(tmp_path, run_compare):
    grid(tmp_path)
    (tmp_path / "2" / "checkpoints").mkdir()
    (tmp_path / "2" / "checkpoints" / "final.ckpt").write_bytes(b"")
    code, out, _ = run_compare(tmp_path)
    assert code == 0
    assert out.startswith("common: data=synthetic trainer.max_steps=10 ~callbacks.progress\n")
    rows = table_lines(out)
    assert rows["header"] == [
        "run", "sfl.num_clients", "train/loss", "val/knn_top1", "test/knn_top1", "attack/mse"
    ]  # fmt: skip
    # Default sort: the first metric shown, train/loss, lowest first; the unfinished run last.
    assert list(rows)[1:] == ["2", "1", "0", "3 (unfinished)"]
    assert rows["1"] == ["1", "20", "2.1000", "55.50", "54.50", "0.0312"]
    assert rows["2"] == ["2", "100", "1.9000", "61.25", "-", "-"]
    assert rows["3 (unfinished)"][1:] == ["1000", "-", "-", "-", "-"]
    assert "runs       3 finished, 1 unfinished" in out
    assert out.rstrip().endswith(f"next:\n  make eval CKPT={tmp_path / '2/checkpoints/final.ckpt'}")


def test_compare_aligns_columns_and_sorts_accuracies_descending(tmp_path, run_compare):
    grid(tmp_path)
    code, out, _ = run_compare(tmp_path, "--metric", "val/knn_top1", "--sort", "val/knn_top1")
    assert code == 0
    table = out.split("\n\n")[0].splitlines()[1:]  # below "common:"
    assert [line.split()[0] for line in table[2:]] == ["2", "1", "0", "3"]
    # Right-aligned numbers end in the same column; every cell is apart from the next.
    ends = {line.rstrip().rfind(".") for line in table[2:5]}
    assert len(ends) == 1
    assert table[2].split() == ["2", "100", "61.25"]
    assert "best       2  val/knn_top1=61.25" in out


def test_compare_marks_the_best_optuna_trial(tmp_path, run_compare):
    for i, (lr, knn) in enumerate([(0.0123456789, 30.0), (0.2, 45.0), (0.05, 40.0)]):
        overrides = ["hparams_search=knn_optuna", f"sfl.lr={lr}", "sfl.queue_size=1024"]
        fake_job(tmp_path, str(i), overrides, {"val/knn_top1": knn})
    # Optuna's best need not be the best of the sort metric (it maximised another run's value).
    results = {"name": "optuna", "best_params": {"sfl.lr": 0.05, "sfl.queue_size": 1024}}
    (tmp_path / "optimization_results.yaml").write_text(
        yaml.safe_dump({**results, "best_value": 40.0})
    )
    code, out, _ = run_compare(tmp_path)
    assert code == 0
    assert "common: hparams_search=knn_optuna sfl.queue_size=1024" in out
    marked = [line for line in out.splitlines() if line.startswith("*")]
    assert [line.split() for line in marked] == [["*", "2", "0.05", "40.00"]]
    assert ["0", "0.01235", "30.00"] in [line.split() for line in out.splitlines()]  # shortened


def test_compare_saves_the_plot_where_asked(tmp_path, run_compare):
    grid(tmp_path / "runs")
    code, text, _ = run_compare(tmp_path / "runs")
    default = tmp_path / "runs" / "compare.png"
    assert code == 0 and default.stat().st_size > 1000
    assert f"  plot       {default}" in text.splitlines()
    out = tmp_path / "figures" / "grid.png"
    assert run_compare(tmp_path / "runs", "--out", out)[0] == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_names_runs_of_several_multiruns_by_their_path(tmp_path, run_compare):
    fake_job(tmp_path / "a", "0", ["seed=1"], {"val/knn_top1": 10.0})
    fake_job(tmp_path / "b", "0", ["seed=2"], {"val/knn_top1": 20.0})
    code, out, _ = run_compare(tmp_path / "a", tmp_path / "b")
    assert code == 0
    rows = table_lines(out)
    assert list(rows)[1:] == ["b/0", "a/0"]
    assert rows["b/0"] == ["b/0", "2", "20.00"]


def test_compare_shows_the_method_of_fl_ssl_rows(tmp_path, run_compare):
    """A row's experiment file chooses its method (module=flmoco), which no override shows."""
    rows = {"0": ("table2_c10_noniid_5clients_cut1", "mocosfl", 60.0)}
    rows["1"] = ("table2_c10_noniid_5clients_flmoco", "flmoco", 50.0)
    for name, (row, module, knn) in rows.items():
        fake_job(tmp_path, name, [f"experiment={row}"], {"val/knn_top1": knn}, module=module)
    code, out, _ = run_compare(tmp_path)
    assert code == 0
    table = table_lines(out)
    assert table["header"] == ["run", "method", "experiment", "val/knn_top1"]
    assert table["0"] == ["0", "mocosfl", "table2_c10_noniid_5clients_cut1", "60.00"]
    assert table["1"] == ["1", "flmoco", "table2_c10_noniid_5clients_flmoco", "50.00"]
    # Where every run names its method as an override, the override's column says it already.
    for name, module in (("a", "flmoco"), ("b", "mocosfl")):
        fake_job(tmp_path / "own", name, [f"module={module}"], {"val/knn_top1": 1.0}, module=module)
    assert table_lines(run_compare(tmp_path / "own")[1])["header"] == [
        "run",
        "module",
        "val/knn_top1",
    ]


def test_compare_without_runs_is_a_one_line_error(tmp_path, run_compare):
    (tmp_path / "empty").mkdir()
    assert run_compare(tmp_path / "empty") == (
        2,
        "",
        f"error: no runs under {tmp_path / 'empty'}\n",
    )
    code, out, err = run_compare(tmp_path / "missing")
    assert (code, out, err.count("\n")) == (2, "", 1) and err.startswith("error: ")
