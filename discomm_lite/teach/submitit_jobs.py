"""Tasks as SLURM jobs through submitit (`Executor(kind="slurm")`), or as submitit's local jobs.

Each task is one job; a batch of several is one array job (at most `array_parallelism` running).
The job's process starts the task's process (`task_process.child_main`, as the local executor does)
and waits for it, so the run folders, records and logs are the same as with the local executor;
submitit's own files (the sbatch script, pickles, each job's stdout and stderr) go to
`<folder>/submitit/`, and `<folder>/tasks.json` names each task's job and logs.

Preemption and time limits follow submitit's checkpointing protocol: SLURM sends SIGUSR2
`signal_delay_s` before the end (`--signal=USR2@...`); submitit calls `SubmititTask.checkpoint`,
which stops the task's process with SIGTERM (a training saves its checkpoint; a notebook's kernel
is interrupted) and waits for it, and the job is requeued (`scontrol requeue`) with the same task:
its run resumes from that checkpoint. A job killed outright is resumed by submitting again.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import submitit

from discomm_lite.atomic import atomic_write
from discomm_lite.teach.task_process import (
    STOP_GRACE_S,
    TASKS_FILE,
    Task,
    child_main,
    finished_record,
    kill_tree,
    read_record,
    state,
    stop_signals,
    write_record,
)

if TYPE_CHECKING:  # annotations only: executors imports this module
    from discomm_lite.teach.executors import Executor, SlurmOptions


class SubmititTask(submitit.helpers.Checkpointable):
    """What a job runs: task `task` in a child process, its record kept in `folder`."""

    def __init__(self, task: Task, folder: str | Path) -> None:
        self.task, self.folder = task, Path(folder)
        self._process = None

    def __call__(self) -> dict | None:
        environment = submitit.JobEnvironment()
        job = {"job_id": environment.job_id, "stdout": str(environment.paths.stdout),
               "stderr": str(environment.paths.stderr)}
        self._process = multiprocessing.get_context().Process(
            target=child_main, args=(self.task, self.folder, os.getpid(), job),
            name=f"task {self.task.name}")
        self._process.start()
        self._process.join()
        return finished_record(self.folder, self.task.name, self._process.pid,
                               self._process.exitcode)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Stop the task's process (it saves first), then have the job requeued with the task."""
        process = self._process
        if process is not None and process.exitcode is None:
            os.kill(process.pid, signal.SIGTERM)
            process.join(STOP_GRACE_S + 15)
            if process.exitcode is None:
                kill_tree(process.pid)
                process.join()
            finished_record(self.folder, self.task.name, process.pid, process.exitcode)
        return submitit.helpers.DelayedSubmission(SubmititTask(self.task, self.folder))

    def __getstate__(self) -> dict:
        return {"task": self.task, "folder": self.folder, "_process": None}


def slurm_parameters(options: SlurmOptions) -> dict:
    """submitit's SlurmExecutor parameters for `options`."""
    parameters = {"time": options.time_min, "cpus_per_task": options.cpus_per_task,
                  "array_parallelism": options.array_parallelism, "nodes": 1,
                  "ntasks_per_node": 1, "signal_delay_s": options.signal_delay_s,
                  "job_name": "discomm", "setup": list(options.setup),
                  "additional_parameters": dict(options.flags)}
    if options.gpus_per_task:
        parameters["gpus_per_task"] = options.gpus_per_task
    if options.mem_gb is not None:
        parameters["mem"] = (f"{int(options.mem_gb)}GB" if options.mem_gb == int(options.mem_gb)
                             else f"{int(options.mem_gb * 1024)}MB")
    for name in ("partition", "account", "qos"):
        if getattr(options, name) is not None:
            parameters[name] = getattr(options, name)
    return parameters


def make_executor(executor: Executor, folder: Path) -> submitit.Executor:
    """submitit's executor for `executor.kind` ("slurm" or "submitit-local"), files in `folder`."""
    options = executor.slurm
    if executor.kind == "slurm":
        slurm = submitit.SlurmExecutor(folder, max_num_timeout=options.max_requeues)
        slurm.update_parameters(**slurm_parameters(options))
        return slurm
    local = submitit.LocalExecutor(folder, max_num_timeout=options.max_requeues)
    local.update_parameters(timeout_min=options.time_min, signal_delay_s=options.signal_delay_s,
                            gpus_per_node=options.gpus_per_task, setup=list(options.setup))
    return local


def run(tasks: Sequence[Task], folder: Path, executor: Executor
        ) -> tuple[dict[str, dict | None], int | None, dict[str, str]]:
    """Submit `tasks` (one array job); wait for them if `executor.wait`.

    Returns each task's record, the signal that stopped the wait (if any) and each job's id.
    """
    if not tasks:
        return {}, None, {}
    submitter = make_executor(executor, folder / "submitit")
    with submitter.batch():
        jobs = [submitter.submit(SubmititTask(task, folder)) for task in tasks]
    _note_jobs(folder, executor.kind, tasks, jobs)
    ids = {task.name: job.job_id for task, job in zip(tasks, jobs, strict=True)}
    if not executor.wait:
        return {task.name: read_record(folder, task.name) for task in tasks}, None, ids
    with stop_signals() as stop:
        while stop.signal is None and not all(job.done() for job in jobs):
            time.sleep(1.0 if executor.kind == "submitit-local" else 15.0)
    if stop.signal is not None and executor.kind == "submitit-local":
        for job in jobs:  # a local job's tasks stop as a SLURM job's do when cancelled
            job.cancel(check=False)
        _wait_for_records(folder, tasks, time.monotonic() + STOP_GRACE_S + 30)
    records = {task.name: _job_record(folder, task, job) if job.done() else
               read_record(folder, task.name) for task, job in zip(tasks, jobs, strict=True)}
    return records, stop.signal, ids


def _wait_for_records(folder: Path, tasks: Sequence[Task], deadline: float) -> None:
    """Wait until no task's record says running (their processes saved and stopped)."""
    while time.monotonic() < deadline and any(
            state(read_record(folder, task.name)) == "running" for task in tasks):
        time.sleep(0.5)


def _job_record(folder: Path, task: Task, job: submitit.Job) -> dict | None:
    """A finished job's task record; one that says "failed" when the job ended without one."""
    try:
        job.result()
    except Exception as e:  # the job failed outside the task (e.g. it could not start)
        record = read_record(folder, task.name)
        if record is None or record.get("status") in ("running", "died"):
            lines = str(e).strip().splitlines()
            record = {**(record or {"name": task.name}), "status": "failed",
                      "error": lines[-1] if lines else type(e).__name__, "job_id": job.job_id,
                      "stderr": str(job.paths.stderr)}
            write_record(folder, task.name, record)
        return record
    return read_record(folder, task.name)


def _note_jobs(folder: Path, kind: str, tasks: Sequence[Task], jobs: Sequence) -> None:
    """Add this submission's jobs to `<folder>/tasks.json` (what `status` reads)."""
    path = folder / TASKS_FILE
    try:
        noted = json.loads(path.read_text())
    except (OSError, ValueError):
        noted = {}
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    for task, job in zip(tasks, jobs, strict=True):
        noted[task.name] = {"executor": kind, "job_id": job.job_id, "submitted": when,
                            "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                            "submission_file": str(job.paths.submission_file)}
    text = (json.dumps(noted, indent=1) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))
