"""Every notebook is committed clean: valid, without outputs, with one `parameters` cell."""

import nbformat
import pytest

from helpers import ROOT

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
