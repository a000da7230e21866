"""benchmarks/study.py: every row composes and validates; a tiny study on generated images writes
its JSON, plot and table with each run's kNN at initialisation; --markdown and --wandb read the
JSON back; --add-init measures the initialisation again, the same."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/ is not a package: its modules by path
from _study_report import HEADER
from _study_rows import ROWS, SEEDS, check_rows, seeds_of, select
from study import parse_args, settings_of

STUDY = ROOT / "benchmarks" / "study.py"
# Two rows of different kinds (MocoSFL's vmap engine over 100 clients, an FL-SSL method with
# BYOL heads), one seed each, 3 steps at width 4 on generated images: about 30 s on one core.
QUICK_ROWS = ["mocosfl1_100c_noniid", "fedbyol_5c_noniid"]


def study(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(STUDY), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    "args", [[], ["--quick"], ["--quick", "--synthetic"]], ids=["tier", "quick", "synthetic"]
)
def test_every_row_composes_and_validates(args):
    """The settings study.py runs, composed and checked in-process (no data is read)."""
    settings = settings_of(parse_args(args), "" if "--synthetic" in args else "/cifar10")
    check_rows(settings, ROWS)  # raises SystemExit with the row's name otherwise


def test_seeds_and_row_names():
    three = {"centralized", "mocosfl1_100c_noniid", "flmoco_5c_noniid"}
    assert {name for name, row in ROWS.items() if len(seeds_of(row, 1.0)) == 3} == three
    assert all(seeds_of(row, 1.0) == list(SEEDS[: row.seeds]) for row in ROWS.values())
    assert all(len(seeds_of(row, 0.0)) == 1 for row in ROWS.values())
    assert list(select(["fedema_5c_noniid", "centralized"])) == ["centralized", "fedema_5c_noniid"]
    with pytest.raises(SystemExit, match="error: unknown row nope; the rows: centralized"):
        select(["nope"])


def test_a_bad_row_is_one_line():
    result = study("--rows", "centralized", "nope")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: unknown row nope; the rows: {', '.join(ROWS)}"
    ]


@pytest.mark.slow
@pytest.mark.long(seconds=45)
def test_a_quick_study_writes_its_json_plot_and_table(tmp_path):
    out = tmp_path / "study.json"
    args = ["--json", str(out), "--work", str(tmp_path / "work")]
    result = study("--quick", "--synthetic", "--jobs", "1", "--rows", *QUICK_ROWS, *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    data = json.loads(out.read_text())
    assert list(data["rows"]) == QUICK_ROWS
    for name, row in data["rows"].items():
        assert row["seeds"] == [SEEDS[0]], name
        for key in ("test_knn_top1", "test_knn_top1_at_init", "test_linear_top1", "wall_min"):
            assert set(row[key]) == {"mean", "std", "n"} and 0 <= row[key]["mean"], (name, key)
        assert {"client_params", "client_mflops_per_image", "upload_mb_per_client_epoch"} <= set(
            row["costs"]
        )
        assert row["costs"]["client_activation_mb_per_batch"] > 0
        assert [p["images"] for p in row["curve"]] == [0, 100, 200, 300]  # init, then each step
        gain = row["test_knn_top1"]["mean"] - row["test_knn_top1_at_init"]["mean"]
        assert row["test_knn_gain"]["mean"] == pytest.approx(gain)
    assert [(r["row"], r["seed"]) for r in data["runs"]] == [(n, SEEDS[0]) for n in QUICK_ROWS]
    assert all(r["global_step"] == 3 and r["wall_s"] > 0 for r in data["runs"])
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert out.with_suffix(".md").read_text().count("\n| ") == 1 + len(QUICK_ROWS)

    table = study("--markdown", "--json", str(out), "--wandb", WANDB_MODE="offline")
    assert table.returncode == 0, table.stderr[-3000:]
    assert "| " + " | ".join(HEADER) + " |" in table.stdout
    assert all(f"| {name} | " in table.stdout for name in QUICK_ROWS)
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline W&B run"

    # A study from before the measurement at initialisation: --add-init measures it again, the
    # same numbers (each run's network is rebuilt from its config and seed).
    measured = [r.pop("knn_at_init") for r in data["runs"]]
    out.write_text(json.dumps(data))
    added = study("--add-init", "--json", str(out))
    assert added.returncode == 0, added.stdout[-3000:] + added.stderr[-3000:]
    assert [r["knn_at_init"] for r in json.loads(out.read_text())["runs"]] == measured
