"""The notebooks: every one committed clean (valid, no outputs, one `parameters` cell), and each
run through papermill on the project's kernel. notebooks/linear_eval.ipynb on a tiny checkpoint
records the numbers the standalone evaluation gives; notebooks/attack.ipynb on two tiny
checkpoints (plain MocoSFL and a TAResSFL expert) records the numbers the API gives."""

import json
from pathlib import Path

import nbformat
import pytest

from mocosfl.eval import evaluate
from mocosfl.privacy import AttackSettings, attack_checkpoint
from mocosfl.train import train

from helpers import ROOT, STAGE1, TINY, compose_eval, run_notebook

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.name for n in NOTEBOOKS])
def test_notebook_is_committed_clean(notebook):
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    assert set(nb.metadata) <= {"kernelspec", "language_info"}


def test_both_notebooks_are_found():
    assert {n.name for n in NOTEBOOKS} >= {"attack.ipynb", "linear_eval.ipynb"}


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


@pytest.mark.slow  # a fresh Python process or a notebook kernel each
def test_notebook_compares_two_checkpoints(compose_train, tmp_path, monkeypatch):
    checkpoints = {}
    plain = [*TINY, "~callbacks.knn", "~callbacks.linear_probe", "trainer.max_epochs=2"]
    for name, overrides in (("checkpoint", plain), ("defended", STAGE1)):
        cfg = compose_train(overrides)
        cfg.paths.output_dir = str(tmp_path / name)
        train(cfg)
        checkpoints[name] = tmp_path / name / "checkpoints" / "final.ckpt"
    settings = AttackSettings(steps=10, width=4, seed=5)  # the notebook's other settings
    expected = {
        name: attack_checkpoint(str(path), aux_fraction=0.5, num_targets=8, settings=settings)
        for name, path in checkpoints.items()
    }

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel computes as this process does
    got, executed = run_notebook(
        "attack",
        tmp_path,
        ckpt_path=str(checkpoints["checkpoint"]),
        defended_ckpt_path=str(checkpoints["defended"]),
        aux_fraction=0.5,
        attack_steps=10,
        decoder_width=4,
        num_targets=8,
        seed=5,
    )
    assert got["settings"]["steps"] == 10 and got["settings"]["seed"] == 5
    assert set(got["results"]) == {"checkpoint", "defended"}
    for name, result in expected.items():
        recorded = got["results"][name]
        print(f"\n{name}: {recorded['attack/mse']:.4f} MSE (API: {result.mse:.4f})")
        for key, value in result.metrics().items():
            # another process (the kernel) may sum in another order: float noise, not 1e-3
            assert recorded[key] == pytest.approx(value, rel=1e-3), (name, key)
        assert recorded["num_aux"] == result.num_aux
        assert recorded["ckpt_path"] == str(checkpoints[name])

    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 2, "the image grids and the decoder's validation curves"
    table = [o for o in outputs if "text/markdown" in o.get("data", {})]
    assert len(table) == 1 and "defended" in table[0]["data"]["text/markdown"]
