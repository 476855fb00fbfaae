"""Where a batch of tasks runs: processes on this machine, or a SLURM cluster through submitit.

A batch is a list of `Task`s (a sweep's points, a study's runs), each a picklable function that
does its work and returns its outcome. `Executor.run` runs them:

- `local` (the default): at most `jobs` child processes at a time on this machine;
- `slurm`: one SLURM job per task, an array job for a batch, through submitit
  (`teach.submitit_jobs`); the submitting process returns once they are queued unless `wait`;
- `submitit-local`: that same code path on this machine (submitit's LocalExecutor), to try it.

Either way each task runs in a child process of its own process group, which takes the task's
lock (one writer, `training.runlock.FileLock`) and keeps its record `<folder>/<name>.json`:
"running" (its pid, host and job) while it works, then "ok", "failed" (with the error's last line)
or "interrupted". SIGINT and SIGTERM reach its work (a training saves its checkpoint, then stops),
and so does the death of the process that started it. Stopping a local batch (SIGINT or SIGTERM
to the process that runs it) starts nothing new, passes the signal to the running tasks, waits for
them (`STOP_GRACE_S`, then kills what is left, kernels included) and returns what finished.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from discomm_lite.teach.task_process import (
    STOP_GRACE_S,
    TASKS_FILE,
    Task,
    child_main,
    finished_record,
    kill_tree,
    last_line,
    read_record,
    state,
    stop_signals,
)

__all__ = ["Batch", "BatchInterrupted", "Executor", "SlurmOptions", "Task", "run_local", "status"]

KINDS = ("local", "slurm", "submitit-local")


@dataclass(frozen=True)
class SlurmOptions:
    """The sbatch settings of each task's job (submitit's SlurmExecutor parameters)."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    time_min: int = 120  # the time limit; a longer run is requeued from its checkpoint
    array_parallelism: int = 16
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()  # shell lines before the job (module load ..., source ...)
    flags: tuple[tuple[str, str | bool], ...] = ()  # other sbatch flags: (name, value)
    max_requeues: int = 3  # time-outs and preemptions survived (submitit's max_num_timeout)
    signal_delay_s: int = 120  # the stop signal comes this long before the time limit


class BatchInterrupted(SystemExit):
    """SIGTERM stopped a batch after its running tasks saved: exit status 143, like a run's."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.signum, self.message = signum, message

    def __str__(self) -> str:
        return self.message


@dataclass
class Batch:
    """What `Executor.run` returns: each task's record, and the signal that stopped it, if any.

    `jobs` maps task names to their submitit job ids (empty for the local executor).
    """

    records: dict[str, dict | None]
    stopped_by: int | None = None
    jobs: dict[str, str] = field(default_factory=dict)

    def interruption(self, message: str) -> BaseException:
        """The exception that ends a stopped batch: KeyboardInterrupt or BatchInterrupted."""
        if self.stopped_by == signal.SIGINT:
            return KeyboardInterrupt(message)
        return BatchInterrupted(self.stopped_by or signal.SIGTERM, message)


@dataclass(frozen=True)
class Executor:
    """Where tasks run: `kind` local (at most `jobs` at a time, default 2), slurm or
    submitit-local (`slurm` options; `wait` for the jobs to end, else return once queued)."""

    kind: str = "local"
    jobs: int | None = None
    slurm: SlurmOptions = SlurmOptions()
    wait: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"executor {self.kind!r} is not one of {', '.join(KINDS)}.")

    def run(self, tasks: Sequence[Task], folder: str | Path) -> Batch:
        """Run `tasks`, their records and (submitit) job files in `folder`; see the module."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "local":
            return run_local(tasks, folder, max(1, self.jobs or 2))
        from discomm_lite.teach import submitit_jobs  # submitit only where it is used

        return Batch(*submitit_jobs.run(tasks, folder, self))


# ---- the local executor ------------------------------------------------------------------------
def run_local(tasks: Sequence[Task], folder: Path, jobs: int) -> Batch:
    """Run `tasks`, at most `jobs` at a time, each in a child process (`child_main`)."""
    context = multiprocessing.get_context()
    waiting, running, records = list(tasks), {}, {}
    deadline = None
    with stop_signals() as stop:
        while running or (waiting and stop.signal is None):
            if stop.signal is None:
                while waiting and len(running) < jobs:
                    task = waiting.pop(0)
                    process = context.Process(target=child_main, name=f"task {task.name}",
                                              args=(task, folder, os.getpid()))
                    process.start()
                    running[task.name] = process
            elif deadline is None:
                deadline = time.monotonic() + STOP_GRACE_S + 15
                print(f"Stopping ({signal.Signals(stop.signal).name}): no new task starts; "
                      f"{len(running)} running task(s) save their state and stop (at most "
                      f"{STOP_GRACE_S + 15:.0f} s).", file=sys.stderr, flush=True)
                for process in running.values():
                    _send(process.pid, stop.signal)
            elif time.monotonic() > deadline:
                for process in running.values():
                    kill_tree(process.pid)
            multiprocessing.connection.wait([p.sentinel for p in running.values()], timeout=0.5)
            for name, process in list(running.items()):
                if process.exitcode is not None:
                    process.join()
                    records[name] = finished_record(folder, name, process.pid, process.exitcode)
                    del running[name]
    for task in waiting:
        records[task.name] = read_record(folder, task.name)
    return Batch(records, stop.signal)


def status(folder: str | Path, names: Sequence[str]) -> list[dict]:
    """Where each task of a batch stands: {"name", "state", "detail"}, from the files alone.

    state: ok, failed, interrupted, died, running, pending (see `task_process.state`); detail:
    the error and the last line of the task's job log, or where and since when it runs, or the
    job it was submitted as.
    """
    folder = Path(folder)
    try:
        jobs = json.loads((folder / TASKS_FILE).read_text())
    except (OSError, ValueError):
        jobs = {}
    rows = []
    for name in names:
        record, job = read_record(folder, name), jobs.get(name, {})
        now = state(record)
        log = (record or {}).get("stderr") or job.get("stderr")
        if now == "pending":
            detail = (f"submitted as {job['executor']} job {job['job_id']} at {job['submitted']}"
                      if job else "not started")
        elif now == "running":
            where = f"job {record['job_id']}, " if record.get("job_id") else ""
            detail = f"{where}process {record.get('pid')} on {record.get('host')} since " \
                     f"{record.get('started')}"
        elif now == "ok":
            detail = f"{record.get('seconds')} s on {record.get('host')}"
        else:
            detail = record.get("error") or ""
        tail = last_line(log) if now in ("failed", "died", "interrupted", "pending") else None
        if tail and tail not in detail:
            detail = f"{detail} | log: {tail}" if detail else f"log: {tail}"
        rows.append({"name": name, "state": now, "detail": detail, "log": log})
    return rows


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


