"""Sweeps as batches (issues 23, 25): through submitit as through the local pool, resubmitted after
a kill or a preemption without a duplicate step, stopped by SIGINT/SIGTERM (their runs saved, the
summary written, no process left), one writer per point and summary, --grid given once per name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import read_records

from discomm_lite.cli import main as cli_main
from discomm_lite.teach.executors import Executor
from discomm_lite.teach.sweep import claim_folder, run_sweep

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}

# A run of 4 steps per epoch, a checkpoint after each epoch; ~0.3 s a step on 2 busy cores.
TRAIN = """
import torch
torch.set_num_threads(1)
from discomm_lite import make_config, train
config = make_config("synthetic-toy", train_subset=128, test_subset=64, batch_size=32,
                     n_bits=n_bits, head_hidden_dim=16, epochs=epochs, warmup_epochs=0,
                     eval_every=0, log_every=1, checkpoint_every=1, device="cpu", seed=seed,
                     out_dir=out_dir)
run = train(config, progress=False)
"""
# Writes one eval record and counts its executions; imports nothing heavy. It takes a moment, so
# that two sweeps started together overlap.
QUICK = """
import json, time
from pathlib import Path
time.sleep(0.5)
Path(out_dir).mkdir(parents=True, exist_ok=True)
with open(Path(out_dir).parent / "executions.txt", "a") as f:
    f.write(f"{n_bits}\\n")
record = {"kind": "eval", "step": 1, "epoch": 1, "knn20_top1": n_bits / 100, "seed": seed}
(Path(out_dir) / "metrics.jsonl").write_text(json.dumps(record) + "\\n")
"""


def make_notebook(path: Path, body: str, parameters: str) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body), nbformat.v4.new_code_cell("print('end')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def quick(tmp_path):
    return make_notebook(tmp_path / "quick.ipynb", QUICK, "n_bits = 8\nseed = 0\nout_dir = None")


@pytest.fixture
def trainer(tmp_path):
    return make_notebook(tmp_path / "train.ipynb", TRAIN,
                         "epochs = 2\nn_bits = 8\nseed = 0\nout_dir = None")


def train_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_records(run_dir, "train")]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def job_controller(out: Path) -> psutil.Process:
    """The process of submitit's local job for the sweep in `out` (a child of this one)."""
    (controller,) = [p for p in psutil.Process().children()
                     if str(out / "jobs" / "submitit") in " ".join(p.cmdline())]
    return controller


def processes_marked(mark: str) -> list[psutil.Process]:
    """The live processes (kernels included) started under DISCOMM_TEST_MARK=mark."""
    found = []
    for process in psutil.process_iter():
        try:
            if (process.environ().get("DISCOMM_TEST_MARK") == mark
                    and process.status() != psutil.STATUS_ZOMBIE):
                found.append(process)
        except psutil.Error:
            pass
    return found


# ---- --grid and -p: each name once ---------------------------------------------------------------
@pytest.mark.parametrize("options, refusal", [
    (["--grid", "n_bits=16", "n_bits=32"], "--grid gives n_bits twice (n_bits=16 and n_bits=32): "
                                           "give its values once, comma-separated "
                                           "(n_bits=16,32)."),
    (["--grid", "n_bits=16", "--grid", "n_bits=32"], "--grid gives n_bits twice"),
    (["--grid", "n_bits=16", "-p", "seed", "1", "-p", "seed", "2"], "-p gives seed twice"),
    (["--grid", "n_bits=16,32", "-p", "n_bits", "8"], "['n_bits'] are given both as fixed"),
])
def test_a_name_given_twice_is_refused_in_one_line(quick, tmp_path, capsys, options, refusal):
    assert cli_main(["sweep", str(quick), *options, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {refusal}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_several_grid_options_add_up(quick, tmp_path):
    from discomm_lite.cli import build_parser, parse_grid

    args = build_parser().parse_args(["sweep", str(quick), "--grid", "n_bits=16,32", "--grid",
                                      "seed=1", "--out", "o"])
    assert parse_grid(args.grid) == {"n_bits": [16, 32], "seed": [1]}


# ---- one sweep per folder, one writer per point and summary --------------------------------------
def test_another_sweep_on_the_same_folder_is_refused(quick, tmp_path):
    out = tmp_path / "out"
    points = {"n_bits=8": {"n_bits": 8}}
    claim_folder(out, {"notebook": str(quick), "parameters": {}, "grid": {"n_bits": [8]},
                       "points": points})
    with pytest.raises(ValueError, match=r"holds another sweep \(grid: \{'n_bits': \[8\]\} there, "
                                         r"\{'n_bits': \[16\]\} here\).*delete .*sweep.json"):
        run_sweep(quick, {"n_bits": [16]}, out)
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json"]  # nothing ran


def test_a_finished_point_is_skipped_when_the_sweep_runs_again(quick, tmp_path):
    out = tmp_path / "out"
    first = run_sweep(quick, {"n_bits": [8, 16]}, out)
    executed = (out / "n_bits=8" / "quick.ipynb").stat().st_mtime_ns
    again = run_sweep(quick, {"n_bits": [8, 16]}, out)
    assert again == first and [r["status"] for r in again] == ["ok", "ok"]
    assert (out / "n_bits=8" / "quick.ipynb").stat().st_mtime_ns == executed
    assert sorted((out / "executions.txt").read_text().split()) == ["16", "8"]  # once each


@pytest.mark.slow  # two sweeps of three kernels each: 10-15 s on 2 busy cores
def test_two_sweeps_at_once_on_one_folder_run_each_point_once(quick, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "discomm_lite", "sweep", str(quick), "--grid",
               "n_bits=8,16,24", "--out", str(out), "--jobs", "2"]
    first, second = (subprocess.Popen(command, cwd=tmp_path, env=ENV, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for _ in range(2))
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert sorted((out / "executions.txt").read_text().split()) == ["16", "24", "8"]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["ok", "ok", "ok"]
    for name in ("n_bits=8", "n_bits=16", "n_bits=24"):  # each executed notebook: one clean run
        nb = nbformat.read(out / name / "quick.ipynb", as_version=4)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("ename")]
    # A point the other sweep ran is reported as such, never as failed.
    assert not any("FAILED" in err for _, err in outputs), outputs


# ---- submitit: the same results, resubmission, preemption --------------------------------------
@pytest.mark.slow
def test_a_sweep_through_submitit_gives_the_local_pools_results(quick, tmp_path):
    grid, fixed = {"n_bits": [8, 16]}, {"seed": 3}
    local = run_sweep(quick, grid, tmp_path / "local", parameters=fixed)
    submitted = run_sweep(quick, grid, tmp_path / "submitit", parameters=fixed,
                          executor=Executor("submitit-local"))
    assert submitted == local and [r["status"] for r in local] == ["ok", "ok"]
    for name in ("n_bits=8", "n_bits=16"):  # the same run folder, and submitit's logs beside
        assert (sorted(p.name for p in (tmp_path / "submitit" / name).iterdir())
                == sorted(p.name for p in (tmp_path / "local" / name).iterdir()))
    logs = sorted(p.name for p in (tmp_path / "submitit" / "jobs" / "submitit").iterdir())
    assert sum(name.endswith("_log.err") for name in logs) == 2


@pytest.mark.slow
def test_a_killed_job_resumes_on_resubmission_with_no_duplicate_steps(trainer, tmp_path):
    grid, fixed = {"n_bits": [8]}, {"epochs": 6}
    out, run = tmp_path / "out", tmp_path / "out" / "n_bits=8"
    run_sweep(trainer, grid, out, parameters=fixed, executor=Executor("submitit-local",
                                                                       wait=False))
    wait_for(lambda: (run / "checkpoint.pt").exists() and len(train_steps(run)) >= 10, 300,
             "two epochs")
    controller = job_controller(out)
    for process in [controller, *controller.children(recursive=True)]:  # the node is lost
        process.kill()
    time.sleep(1)
    assert (run / "run.lock").exists() and (out / "jobs" / "n_bits=8.lock").exists()
    assert json.loads((out / "summary.json").read_text())[0]["status"] != "ok"
    results = run_sweep(trainer, grid, out, parameters=fixed,
                        executor=Executor("submitit-local"))
    assert results[0]["status"] == "ok"
    assert train_steps(run) == list(range(1, 25))  # every step once
    err = "".join(p.read_text() for p in (out / "jobs" / "submitit").glob("*_log.err"))
    assert "Took over the stale lock" in err and "no longer runs" in err
    # The same losses as one uninterrupted run through the local pool.
    run_sweep(trainer, grid, tmp_path / "local", parameters=fixed)
    local = read_records(tmp_path / "local" / "n_bits=8", "train")
    assert [r["loss"] for r in read_records(run, "train")] == [r["loss"] for r in local]


@pytest.mark.slow
def test_a_preempted_job_saves_requeues_and_resumes(trainer, tmp_path):
    out, run = tmp_path / "out", tmp_path / "out" / "n_bits=8"
    run_sweep(trainer, {"n_bits": [8]}, out, parameters={"epochs": 6},
              executor=Executor("submitit-local", wait=False))
    wait_for(lambda: len(train_steps(run)) >= 6, 300, "training")
    controller = job_controller(out)
    (job,) = controller.children()
    os.kill(job.pid, signal.SIGUSR2)  # SLURM's signal before a time limit or a preemption
    wait_for(lambda: not controller.is_running() or controller.status() == "zombie", 300,
             "the job to end")
    assert train_steps(run) == list(range(1, 25))
    (stopped,) = read_records(run, "interrupted")
    assert "checkpoint saved" in stopped["message"]
    log = "".join(p.read_text() for p in (out / "jobs" / "submitit").glob("*_log.out"))
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    assert json.loads((out / "summary.json").read_text())[0]["status"] == "ok"


# ---- stopping a sweep: its runs save, its summary is written, no process is left ---------------
@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_stopping_a_sweep_stops_every_process_it_started_after_they_save(trainer, tmp_path, how):
    out, mark = tmp_path / "out", uuid.uuid4().hex
    sweep = subprocess.Popen(
        [sys.executable, "-m", "discomm_lite", "sweep", str(trainer), "--grid",
         "n_bits=8,16,24,32", "-p", "epochs", "100", "--out", str(out), "--jobs", "2"],
        cwd=tmp_path, env={**ENV, "DISCOMM_TEST_MARK": mark}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    running = [out / "n_bits=8", out / "n_bits=16"]
    wait_for(lambda: all(len(train_steps(r)) >= 2 for r in running), 300, "two runs training")
    stopped = time.monotonic()
    sweep.send_signal(getattr(signal, how))  # the sweep's process alone: not its group
    _, err = sweep.communicate(timeout=300)
    wait_for(lambda: not processes_marked(mark), 120, "every process of the sweep to end")
    seconds = time.monotonic() - stopped
    assert seconds < 60, seconds
    assert sweep.returncode == {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -9}[how]
    if how != "SIGKILL":
        assert err.strip().splitlines()[-1].startswith(f"interrupted: the sweep stopped ({how}): "
                                                       "2 interrupted, 2 pending")
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["interrupted", "interrupted", "pending", "pending"]
    for run in running:
        assert (run / "checkpoint.pt").exists() and not (run / "run.lock").exists()
        (record,) = read_records(run, "interrupted")
        assert record["step"] == train_steps(run)[-1]  # saved where it stopped
    assert not (out / "n_bits=24").exists()  # started nothing after the signal


@pytest.mark.slow
def test_stopping_papermill_running_notebook_08_stops_its_runs_after_they_save(tmp_path):
    # Notebook 08 sweeps the quickstart from its kernel; papermill itself is stopped.
    out, mark = tmp_path / "sweep", uuid.uuid4().hex
    papermill = subprocess.Popen(
        [sys.executable, "-m", "papermill", str(REPO / "notebooks" / "08_sweep.ipynb"),
         str(tmp_path / "08.ipynb"), "-p", "out_dir", str(out), "-p", "epochs", "12",
         "-y", "grid: {n_bits: [16, 32]}", "--cwd", str(REPO / "notebooks")],
        cwd=tmp_path, env={**ENV, "DISCOMM_TEST_MARK": mark, "DISCOMM_SMOKE": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = [out / "n_bits=16", out / "n_bits=32"]
    wait_for(lambda: all(len(train_steps(r)) >= 1 for r in runs), 600, "both runs training")
    papermill.terminate()
    papermill.wait(timeout=60)
    wait_for(lambda: not processes_marked(mark), 120, "every process of the sweep to end")
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["interrupted", "interrupted"]
    for run in runs:
        assert (run / "checkpoint.pt").exists() and not (run / "run.lock").exists()
        assert read_records(run, "interrupted")
