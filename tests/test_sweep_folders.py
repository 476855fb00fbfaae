"""Sweeps refuse grids whose points share a run folder, before any run starts (issue 15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from discomm_lite.teach.sweep import check_run_folders, grid_points, run_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def notebook(tmp_path):
    """A notebook whose parameters cell assigns the fields the grids below use."""
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("n_bits = 8\ndata_root = None\nout_dir = None")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell("raise RuntimeError('never run')")]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("grid", [
    {"n_bits": [16, 16]},  # what --grid n_bits=16,016 parses to
    {"data_root": ["a/b", "a_b"]},  # run_name spells both a_b
    {"data_root": ["Data", "data"]},  # one folder on a case-insensitive disk
])
def test_points_sharing_a_folder_are_refused_before_any_run(notebook, tmp_path, grid):
    with pytest.raises(ValueError, match="several runs into one run folder"):
        run_sweep(notebook, grid, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # no folder made, no run started


def test_distinct_points_pass():
    check_run_folders(grid_points({"n_bits": [16, 32], "data_root": ["a", "b"]}))


def test_cli_refuses_a_colliding_grid_in_one_line(notebook, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "discomm_lite", "sweep", str(notebook), "--grid",
         "n_bits=16,016", "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("error: The grid puts several runs into one run folder")
    assert "{'n_bits': 16} and {'n_bits': 16}" in result.stderr
    assert "Traceback" not in result.stderr
