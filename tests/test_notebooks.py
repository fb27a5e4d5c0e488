"""Every notebook runs from a clean state, top to bottom, without an error (nbclient), and is
committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert {"00_start_here", "01_my_rig", "02_check_a_claim"} <= names
    experiments = {p.parent.name for p in (ROOT / "experiments").glob("*/run.py")}
    for name in experiments:  # one per experiment
        assert any(n.endswith(name) for n in names), name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_error(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},  # run where a user opens it
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
