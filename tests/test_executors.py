"""Where batch tasks run (issue 23): the local executor's processes, records and stops; the status
view; SLURM jobs as submitit writes them (the sbatch script, checked without a cluster)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from discomm_lite.cli import build_parser
from discomm_lite.teach.batch_cli import executor_from_args
from discomm_lite.teach.executors import Executor, SlurmOptions, Task, run_local, status
from discomm_lite.teach.task_process import read_record, write_record
from discomm_lite.training.runlock import FileLock, holder_record

REPO = Path(__file__).resolve().parents[1]


def _value(x: int) -> dict:
    return {"value": x, "pid": os.getpid()}


def _fail() -> dict:
    raise ValueError("a line before\nthe task's own error")


def _killed() -> dict:
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def _mark(path: str) -> dict:
    Path(path).write_text("ran")
    return {}


def _sleep(seconds: float) -> dict:
    time.sleep(seconds)
    return {}


def test_the_local_executor_runs_each_task_in_its_own_process_and_records_it(tmp_path):
    tasks = [Task("ok", partial(_value, 3)), Task("bad", _fail), Task("killed", _killed)]
    batch = run_local(tasks, tmp_path, jobs=2)
    assert batch.stopped_by is None
    ok, bad, killed = (batch.records[name] for name in ("ok", "bad", "killed"))
    assert ok["status"] == "ok" and ok["value"] == 3 and ok["error"] is None
    assert ok["pid"] != os.getpid() and ok["host"] == socket.gethostname()
    assert bad["status"] == "failed" and bad["error"] == "the task's own error"
    assert "ValueError" in bad["traceback"]
    assert killed["status"] == "died" and "SIGKILL" in killed["error"]
    assert read_record(tmp_path, "ok") == ok  # the record on disk is what the batch returned


def test_a_task_held_by_a_live_process_is_left_to_it(tmp_path):
    marker = tmp_path / "ran"
    with FileLock(tmp_path / "t.lock"):  # this process holds the task
        batch = run_local([Task("t", partial(_mark, str(marker)), lock=str(tmp_path / "t.lock"))],
                          tmp_path, jobs=1)
    assert batch.records["t"] is None and not marker.exists()


def test_a_task_done_meanwhile_is_not_run_again(tmp_path):
    marker = tmp_path / "ran"
    task = Task("t", partial(_mark, str(marker)), done=lambda: True)
    run_local([task], tmp_path, jobs=1)
    assert not marker.exists()


def test_a_stopped_local_batch_starts_nothing_new_and_stops_what_runs(tmp_path):
    tasks = [Task(f"t{i}", partial(_sleep, 60)) for i in range(3)]
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    batch = run_local(tasks, tmp_path, jobs=2)
    assert time.monotonic() - started < 20  # not the tasks' 60 s
    assert batch.stopped_by == signal.SIGINT
    assert [batch.records[n]["status"] for n in ("t0", "t1")] == ["interrupted"] * 2
    assert batch.records["t2"] is None  # never started
    assert isinstance(batch.interruption("x"), KeyboardInterrupt)


def test_a_task_stops_when_the_process_that_started_it_dies(tmp_path):
    # A kernel restarted, a job killed: the task's process is orphaned and stops as by SIGTERM.
    script = (
        "import sys, time\n"
        "from functools import partial\n"
        "from pathlib import Path\n"
        "from discomm_lite.teach.executors import Task, run_local\n"
        "def work():\n"
        "    time.sleep(60)\n"
        "    return {}\n"
        f"run_local([Task('t', work)], Path({str(tmp_path)!r}), jobs=1)\n")
    starter = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.monotonic() + 60
    while (read_record(tmp_path, "t") or {}).get("status") != "running":
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.1)
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 15
    while (read_record(tmp_path, "t") or {}).get("status") == "running":
        assert time.monotonic() < deadline, "the orphaned task did not stop"
        time.sleep(0.1)
    record = read_record(tmp_path, "t")
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"]


def test_status_says_where_each_task_stands(tmp_path):
    log = tmp_path / "4242_1_0_log.err"
    log.write_text("Traceback ...\nslurmstepd: error: Detected 1 oom_kill event\n\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = {"host": socket.gethostname(), "started": "2026-01-01 10:00:00 +0000"}
    write_record(tmp_path, "ok", {"status": "ok", "seconds": 12.5, **here})
    write_record(tmp_path, "failed", {"status": "failed", "error": "ValueError: bad lr",
                                      **here})
    write_record(tmp_path, "running", {**holder_record(), "status": "running"})
    write_record(tmp_path, "died", {"status": "running", "pid": dead.pid, "stderr": str(log),
                                    **here})
    (tmp_path / "tasks.json").write_text(json.dumps({"pending": {
        "executor": "slurm", "job_id": "4242_3", "submitted": "2026-01-01 09:00:00 +0000",
        "stderr": str(tmp_path / "missing.err")}}))
    rows = {r["name"]: r for r in status(tmp_path, ["ok", "failed", "running", "died",
                                                    "pending", "never"])}
    assert {n: r["state"] for n, r in rows.items()} == {
        "ok": "ok", "failed": "failed", "running": "running", "died": "died",
        "pending": "pending", "never": "pending"}
    assert rows["failed"]["detail"] == "ValueError: bad lr"
    assert rows["died"]["detail"].endswith("log: slurmstepd: error: Detected 1 oom_kill event")
    assert f"process {os.getpid()} on {socket.gethostname()}" in rows["running"]["detail"]
    assert rows["pending"]["detail"] == "submitted as slurm job 4242_3 at 2026-01-01 09:00:00 +0000"
    assert rows["never"]["detail"] == "not started"


def _executor(*options: str) -> Executor:
    args = build_parser().parse_args(["sweep", "nb.ipynb", "--grid", "n_bits=8", "--out", "o",
                                      *options])
    return executor_from_args(args)


def test_executor_options_become_an_executor_and_ignored_ones_are_refused():
    assert _executor() == Executor("local")
    assert _executor("--jobs", "3") == Executor("local", jobs=3)
    slurm = _executor("--executor", "slurm", "--slurm-partition", "gpu", "--slurm-time", "30",
                      "--slurm-flag", "constraint=a100", "--slurm-flag=--exclusive")
    assert slurm.slurm == SlurmOptions(partition="gpu", time_min=30,
                                       flags=(("constraint", "a100"), ("exclusive", True)))
    assert not slurm.wait and _executor("--executor", "slurm", "--wait").wait
    for options, refusal in (
            (["--slurm-partition", "gpu"], "--slurm-partition applies to --executor slurm"),
            (["--wait"], "--wait applies to --executor slurm"),
            (["--executor", "slurm", "--jobs", "2"], "--jobs applies to --executor local"),
            (["--executor", "slurm", "--slurm-flag", "no such=flag"], "--slurm-flag takes")):
        with pytest.raises(ValueError, match=refusal):
            _executor(*options)


# ---- SLURM, without a cluster: submitit writes the sbatch script, a stand-in sbatch takes it ----
SBATCH = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/sbatch.calls"
echo "Submitted batch job 4242"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`srun` and `sbatch` stand-ins on PATH: sbatch accepts any script as job 4242."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", "#!/bin/sh\nexit 0\n"), ("sbatch", SBATCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


@pytest.fixture
def notebook(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("n_bits = 8\nout_dir = None")
    parameters.metadata["tags"] = ["parameters"]
    body = ("from pathlib import Path\n"
            "Path(out_dir, 'done.txt').write_text(f'{n_bits} bits')")
    nb.cells = [parameters, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    return tmp_path / "tiny.ipynb"


SETTINGS = SlurmOptions(partition="gpu", gpus_per_task=1, cpus_per_task=4, mem_gb=16,
                        time_min=90, array_parallelism=2, account="lab", qos="high",
                        setup=("module load cuda/12",), signal_delay_s=100,
                        flags=(("constraint", "a100"), ("exclusive", True)))


def _submit(notebook, out):
    from discomm_lite.teach.sweep import run_sweep

    return run_sweep(notebook, {"n_bits": [8, 16, 32]}, out,
                     executor=Executor("slurm", slurm=SETTINGS, wait=False))


def test_a_sweep_is_one_array_job_with_the_slurm_settings(fake_slurm, notebook, tmp_path):
    out = tmp_path / "out"
    results = _submit(notebook, out)
    assert [r["status"] for r in results] == ["pending"] * 3
    assert (fake_slurm / "sbatch.calls").read_text().count("\n") == 1  # one sbatch: one array
    jobs = json.loads((out / "jobs" / "tasks.json").read_text())
    assert [jobs[r["name"]]["job_id"] for r in results] == ["4242_0", "4242_1", "4242_2"]
    script = Path(jobs["n_bits=16"]["submission_file"]).read_text()
    flags = {line for line in script.splitlines() if line.startswith("#SBATCH")}
    logs = out / "jobs" / "submitit"
    assert flags >= {"#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=1",
                     "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "#SBATCH --time=90",
                     "#SBATCH --array=0-2%2", "#SBATCH --account=lab", "#SBATCH --qos=high",
                     "#SBATCH --constraint=a100", "#SBATCH --exclusive",
                     "#SBATCH --signal=USR2@100", "#SBATCH --nodes=1",
                     "#SBATCH --ntasks-per-node=1",
                     f"#SBATCH --output={logs}/%A_%a_0_log.out",
                     f"#SBATCH --error={logs}/%A_%a_0_log.err"}
    assert "module load cuda/12" in script
    assert f"-m submitit.core._submit {logs}" in script
    # Each array task's pickle holds its own point.
    from submitit.core.utils import DelayedSubmission

    for index, name in enumerate(("n_bits=8", "n_bits=16", "n_bits=32")):
        delayed = DelayedSubmission.load(logs / f"4242_{index}_submitted.pkl")
        assert delayed.function.task.name == name
    assert [r["state"] for r in status(out / "jobs", list(jobs))] == ["pending"] * 3
    assert status(out / "jobs", ["n_bits=16"])[0]["detail"].startswith(
        "submitted as slurm job 4242_1 at ")


@pytest.mark.slow
def test_an_array_task_runs_its_point_as_slurm_starts_it(fake_slurm, notebook, tmp_path):
    # What a node does with array task 1 of job 4242: the script's command, SLURM's variables.
    out = tmp_path / "out"
    _submit(notebook, out)
    logs = out / "jobs" / "submitit"
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4244", "SLURM_ARRAY_JOB_ID": "4242",
             "SLURM_ARRAY_TASK_ID": "1", "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1",
             "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    env = {**os.environ, **slurm, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    with open(logs / "4242_1_0_log.out", "w") as stdout, \
            open(logs / "4242_1_0_log.err", "w") as stderr:
        subprocess.run([sys.executable, "-u", "-m", "submitit.core._submit", str(logs)],
                       env=env, stdout=stdout, stderr=stderr, timeout=300, check=True)
    assert (out / "n_bits=16" / "done.txt").read_text() == "16 bits"
    assert (out / "n_bits=16" / "tiny.ipynb").exists()  # the executed notebook, as locally
    record = read_record(out / "jobs", "n_bits=16")
    assert record["status"] == "ok" and record["job_id"] == "4242_1"
    assert record["slurm_job"] == "4242_1"  # the lock and the record name the SLURM job
    assert record["stderr"] == str(logs / "4242_1_0_log.err")
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["pending", "ok", "pending"]
