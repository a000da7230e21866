"""notebooks/linear_eval.ipynb runs through papermill on a tiny checkpoint, on the project's
kernel, and records the numbers the standalone evaluation gives."""

import json
from pathlib import Path

import pytest

from mocosfl.eval import evaluate
from mocosfl.train import train

from helpers import TINY, compose_eval, run_notebook


@pytest.mark.slow  # a fresh Python process or a notebook kernel each
def test_notebook_records_the_evaluation(compose_train, tmp_path):
    cfg = compose_train(
        [*TINY, "~callbacks.knn", "~callbacks.linear_probe", "trainer.max_epochs=2"]
    )
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "final.ckpt"
    expected = evaluate(
        compose_eval(
            tmp_path / "eval",
            [
                f"ckpt_path={ckpt}",
                "eval=linear",
                "eval.probe.epochs=5",
                "eval.probe.label_fraction=0.5",
            ],
        )
    )
    probe = json.loads((tmp_path / "eval" / "probe.json").read_text())

    got, executed = run_notebook(
        "linear_eval",
        tmp_path,
        ckpt_path=str(ckpt),
        eval_kind="linear",
        epochs=5,
        label_fraction=0.5,
    )
    assert got["test_top1"] == expected["test/linear_top1"]
    assert got["val_top1"] == expected["val/linear_top1"]
    for key in ("val_curve", "epoch", "num_labelled", "test_per_class", "test_confusion"):
        assert got[key] == probe[key], key
    assert got["seed"] == cfg.seed and got["settings"]["epochs"] == 5
    assert got["feature_dim"] == 64 and got["num_test"] == 32
    assert sum(map(sum, got["test_confusion"])) == 32
    first, second = got["pca_explained_variance"]
    assert 0 < second <= first and first + second <= 1 + 1e-9

    figures = [
        o for c in executed.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(figures) == 4, "learning curve, per-class accuracy, confusion matrix, PCA"
