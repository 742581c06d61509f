"""The notebooks execute top to bottom on small slices (so they never rot) and are stored without outputs."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
SMALL = {"SPATTEN_NB_EXAMPLES": "16", "SPATTEN_NB_HEAD_TRAIN": "64", "SPATTEN_NB_LM_TOKENS": "24",
         "SPATTEN_NB_WINDOW": "16", "SPATTEN_NB_TOKENS": "8"}


def test_all_four_notebooks_are_present():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_glue_accuracy.ipynb", "03_lm_perplexity.ipynb",
                                           "04_hardware_speedup_energy.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    assert any("import spatten" in c.source for c in nb.cells)
    assert not any(c.source.lstrip().startswith(("def ", "class ")) for c in nb.cells), "notebooks define no library code"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, data_dir, tmp_path, monkeypatch):
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SPATTEN_NB_OUT", str(tmp_path / "sweep"))
    monkeypatch.setenv("SPATTEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # every plotting cell rendered a figure
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == sum("plots." in c.source for c in nb.cells if c.cell_type == "code")
