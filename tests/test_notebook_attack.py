"""notebooks/attack.ipynb runs through papermill on two tiny checkpoints (plain MocoSFL and a
TAResSFL expert), on the project's kernel, and records the numbers the API gives."""

import pytest

from mocosfl.privacy import AttackSettings, attack_checkpoint
from mocosfl.train import train

from helpers import STAGE1, TINY, run_notebook


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
