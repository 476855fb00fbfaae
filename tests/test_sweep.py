"""Sweeps: one papermill execution per grid point, failures reported, the others finish."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from discomm_lite.teach.papermill import notebook_parameters
from discomm_lite.teach.sweep import grid_points, run_name, run_sweep, summary_table

REPO = Path(__file__).resolve().parents[1]

# A tiny notebook: its parameters are Config fields; it writes one eval record into out_dir,
# and fails for n_bits == 13. It imports nothing heavy, so each execution takes a second or two.
BODY = """
import json
from pathlib import Path

if n_bits == 13:
    raise ValueError("n_bits = 13 is unlucky")
Path(out_dir).mkdir(parents=True, exist_ok=True)
record = {"kind": "eval", "step": 1, "epoch": 1, "knn20_top1": n_bits / 100, "seed": seed}
(Path(out_dir) / "metrics.jsonl").write_text(json.dumps(record) + "\\n")
"""


@pytest.fixture
def notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("n_bits = 8\nseed = 0\nout_dir = None")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def test_grid_points_and_names():
    points = grid_points({"n_bits": [8, 16], "reinit_every": [0, 2]})
    assert points == [{"n_bits": 8, "reinit_every": 0}, {"n_bits": 8, "reinit_every": 2},
                      {"n_bits": 16, "reinit_every": 0}, {"n_bits": 16, "reinit_every": 2}]
    assert run_name(points[1]) == "n_bits=8,reinit_every=2"
    assert run_name({}) == "default"


def test_a_failed_run_is_reported_and_the_others_finish(notebook, tmp_path):
    out = tmp_path / "sweep"
    results = run_sweep(notebook, {"n_bits": [8, 13, 16]}, out, parameters={"seed": 3}, jobs=2)
    by_name = {r["name"]: r for r in results}
    assert list(by_name) == ["n_bits=8", "n_bits=13", "n_bits=16"]
    failed = by_name["n_bits=13"]
    assert failed["status"] == "failed" and "unlucky" in failed["error"]
    assert failed["final_eval"] is None
    for name, n_bits in (("n_bits=8", 8), ("n_bits=16", 16)):
        run = by_name[name]
        assert run["status"] == "ok" and run["error"] is None
        assert run["parameters"] == {"seed": 3, "n_bits": n_bits}  # fixed + grid values
        assert run["final_eval"]["knn20_top1"] == n_bits / 100
        assert run["final_eval"]["seed"] == 3  # the fixed parameter reached the notebook
    for name in by_name:  # each run in its own folder, with its executed notebook
        assert (out / name / "tiny.ipynb").exists()
    assert not (out / "n_bits=13" / "metrics.jsonl").exists()
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(results))
    table, spread, rows, cols = summary_table(results, "n_bits", "seed", "knn20_top1")
    assert rows == [8, 13, 16] and cols == [3]
    assert table[0] == [0.08] and table[2] == [0.16] and table[1][0] != table[1][0]  # NaN
    assert all(s[0] != s[0] for s in spread)  # one run a cell: no spread


def test_summary_table_averages_the_runs_of_a_cell_over_the_other_names():
    def run(n_bits, seed, knn):
        return {"parameters": {"n_bits": n_bits, "seed": seed},
                "final_eval": None if knn is None else {"knn20_top1": knn}}

    results = [run(8, 0, 0.5), run(8, 1, 0.7), run(16, 0, 0.9), run(16, 1, None)]
    means, spreads, rows, cols = summary_table(results, "n_bits", "n_bits", "knn20_top1")
    assert rows == cols == [8, 16]
    assert means[0][0] == pytest.approx(0.6) and spreads[0][0] == pytest.approx(0.1414, abs=1e-4)
    assert means[1][1] == 0.9 and spreads[1][1] != spreads[1][1]  # the failed seed is left out
    assert means[0][1] != means[0][1]  # no run there


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork",
                    reason="the stand-in papermill reaches the workers by fork")
def test_what_papermill_and_the_kernel_write_to_stderr_goes_to_the_run_log(notebook, tmp_path,
                                                                          capfd, monkeypatch):
    def noisy_papermill(source, output, **kwargs):
        print("papermill: Unable to parse line 7", file=sys.stderr)  # its logger's warning
        os.write(2, b"[IPKernelApp] WARNING | the kernel's start-up message\n")  # a child's fd 2
        Path(output).write_text(Path(source).read_text())

    monkeypatch.setattr(papermill, "execute_notebook", noisy_papermill)
    results = run_sweep(notebook, {"n_bits": [8]}, tmp_path / "sweep", jobs=1)
    assert results[0]["status"] == "ok"
    log = (tmp_path / "sweep" / "n_bits=8" / "execution.log").read_text()
    assert "Unable to parse line 7" in log and "start-up message" in log
    print("the caller's stderr still works", file=sys.stderr)
    assert capfd.readouterr().err == "the caller's stderr still works\n"


def test_names_the_notebook_does_not_read_are_refused(notebook, tmp_path):
    assert notebook_parameters(notebook) == ["n_bits", "seed", "out_dir"]
    with pytest.raises(ValueError, match=r"\['n_bitz'\].*parameters are: n_bits, seed, out_dir"):
        run_sweep(notebook, {"n_bitz": [8]}, tmp_path / "sweep")
    with pytest.raises(ValueError, match="sead"):
        run_sweep(notebook, {"n_bits": [8]}, tmp_path / "sweep", parameters={"sead": 1})
    # A real Config field is refused too when this notebook never reads it: the runs would be
    # identical copies (a sweep over lr here would change nothing).
    with pytest.raises(ValueError, match=r"\['lr'\]"):
        run_sweep(notebook, {"lr": [1e-3, 1e-2]}, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()  # refused before anything ran


def test_a_notebook_without_out_dir_or_parameters_cell_is_refused(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("n_bits = 8")]
    path = tmp_path / "untagged.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="0 cells tagged 'parameters'"):
        run_sweep(path, {"n_bits": [8]}, tmp_path / "sweep")
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match=r"\['out_dir'\]"):
        run_sweep(path, {"n_bits": [8]}, tmp_path / "sweep")


def cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    return subprocess.run([sys.executable, "-m", "discomm_lite", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_sweep_fails_and_names_the_failed_run(notebook, tmp_path):
    out = tmp_path / "cli-sweep"
    result = cli("sweep", str(notebook), "--grid", "n_bits=8,13", "--out", str(out), "--jobs", "2",
                 cwd=tmp_path)
    assert result.returncode != 0
    assert "n_bits=13" in result.stderr and "unlucky" in result.stderr
    assert "n_bits=8" not in result.stderr  # only the failed run is named as failed
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["ok", "failed"]


def test_cli_sweep_succeeds_with_fixed_parameters(notebook, tmp_path):
    out = tmp_path / "cli-ok"
    result = cli("sweep", str(notebook), "--grid", "n_bits=8,16", "-p", "seed", "5",
                 "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["final_eval"]["seed"] for r in summary] == [5, 5]


def test_cli_refuses_unknown_grid_names(notebook, tmp_path):
    result = cli("sweep", str(notebook), "--grid", "n_bitz=8,16", "--out", str(tmp_path / "x"),
                 cwd=tmp_path)
    assert result.returncode != 0
    assert "n_bitz" in result.stderr
    assert not (tmp_path / "x").exists()
