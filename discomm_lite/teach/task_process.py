"""One task of a batch in its own process: its lock, its record, how it stops.

`child_main` is what every executor runs in a task's process (a child of the local executor's
process, or of a submitit job's): the task's lock (`training.runlock.FileLock`: one writer, across
processes and hosts), its record `<folder>/<name>.json` ("running" with its pid, host and job,
then "ok", "failed" with the error's last line, or "interrupted"), and its stop: SIGINT and SIGTERM
reach the work (the training loop saves its checkpoint, then stops), and so does the death of the
process that started it. `kernels_interrupted` passes a stop on to a notebook's kernel instead.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from discomm_lite.atomic import atomic_write
from discomm_lite.training.runlock import FileLock, LockHeld, dead_holder, holder_record

# What a stopped task may take to save and stop before it is killed (kernels and all).
STOP_GRACE_S = 60.0
# A stopped notebook's kernel is interrupted again this often (a cell that began meanwhile).
INTERRUPT_AGAIN_S = 15.0
# The jobs a submitit executor submitted, beside the records (teach.submitit_jobs).
TASKS_FILE = "tasks.json"


@dataclass(frozen=True)
class Task:
    """One unit of a batch: `work()` returns its outcome fields ({"status": "ok", ...}).

    `lock`: a file held while it runs (one writer at a time, across processes and hosts).
    `done()`: True when nothing is left to do (checked again once the lock is held). `after()`:
    called in its process once its record is written (a sweep rewrites its summary).
    """

    name: str
    work: Callable[[], dict]
    lock: str | None = None
    done: Callable[[], bool] | None = None
    after: Callable[[], None] | None = None


# ---- records ---------------------------------------------------------------------------------
def read_record(folder: Path, name: str) -> dict | None:
    """The record of task `name` in `folder`, or None when it has none (yet)."""
    try:
        record = json.loads((Path(folder) / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(folder: Path, name: str, record: dict) -> None:
    """Replace task `name`'s record atomically."""
    text = (json.dumps(record, indent=1, default=str) + "\n").encode()
    atomic_write(Path(folder) / f"{name}.json", lambda f: f.write(text))


def state(record: dict | None) -> str:
    """A task's state from its record: pending, running, died, ok, failed or interrupted.

    "died": its record says running, but its process is provably gone on this host.
    """
    if record is None:
        return "pending"
    if record.get("status") == "running" and dead_holder(record):
        return "died"
    return str(record.get("status"))


def last_line(path: str | Path | None) -> str | None:
    """The last non-empty line of a text file (a log), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except (OSError, TypeError):
        return None
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else None


# ---- one task, in its own process -----------------------------------------------------------
def run_task(task: Task, folder: Path, job: dict | None = None) -> dict | None:
    """Run `task` in this process as a batch does: lock, record, outcome. Returns its record.

    None when another live process holds the task (its record is that process's). `job` adds
    the submitit job's id and logs to the record.
    """
    lock = FileLock(task.lock, f"the task {task.name}") if task.lock else None
    if lock is not None:
        try:
            lock.acquire()
        except LockHeld:
            return None
    try:
        if task.done is not None and task.done():
            return read_record(folder, task.name)
        record = {"name": task.name, "status": "running", **holder_record(), **(job or {})}
        write_record(folder, task.name, record)
        started = time.time()
        outcome = _outcome(task.work)
        _ignore_stop_signals()  # what is left is to write down how it ended
        record.update({"error": None, **outcome, "ended": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                       "seconds": round(time.time() - started, 1)})
        write_record(folder, task.name, record)
    finally:
        if lock is not None:
            lock.release()
    if task.after is not None:
        task.after()
    return record


def _outcome(work: Callable[[], dict]) -> dict:
    try:
        return {"status": "ok", **work()}
    except KeyboardInterrupt as e:
        return {"status": "interrupted", "error": str(e) or "stopped by SIGINT"}
    except SystemExit as e:
        name = _signal_name(e.code - 128) if isinstance(e.code, int) else None
        if name:
            text = f"stopped by {name}" + (f": {e}" if str(e) != str(e.code) else "")
            return {"status": "interrupted", "error": text}
        return {"status": "failed", "error": f"exited with {e.code!r}"}
    except Exception as e:
        text = str(e).strip()
        return {"status": "failed", "error": text.splitlines()[-1] if text else type(e).__name__,
                "traceback": traceback.format_exc(limit=-3)}


def child_main(task: Task, folder: Path, parent: int, job: dict | None = None) -> None:
    """The entry of a task's process: its own process group, stop signals, a watch on `parent`.

    SIGTERM raises SystemExit(143) (SIGINT: KeyboardInterrupt), where the work has not installed
    its own handling (the training loop saves first). The preemption signal of a submitit job
    (SIGUSR2) is ignored here and in the kernels started from here: the job's process stops this
    one with SIGTERM instead. When `parent` dies (a kernel restarted, a job killed), this process
    stops itself as if it had received SIGTERM.
    """
    if hasattr(os, "setpgrp"):  # POSIX
        os.setpgrp()
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    preempt = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if preempt is not None:
        signal.signal(preempt, signal.SIG_IGN)
    threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()
    run_task(task, folder, job)


def finished_record(folder: Path, name: str, pid: int, exitcode: int | None) -> dict | None:
    """Task `name`'s record once its process `pid` ended: "died" if that process wrote none."""
    record = read_record(folder, name)
    if record is not None and record.get("status") == "running" and record.get("pid") == pid:
        signum = -exitcode if exitcode and exitcode < 0 else (exitcode or 0) - 128
        stopped = signum in (signal.SIGINT, signal.SIGTERM)
        how = f"signal {_signal_name(signum)}" if _signal_name(signum) else \
            f"exit status {exitcode}"
        record.update(status="interrupted" if stopped else "died",
                      error=f"its process ended ({how}) before it could say how the task ended")
        write_record(folder, name, record)
    return record


def _signal_name(signum: int) -> str | None:
    """"SIGTERM" for 15; None for a number that names no signal."""
    try:
        return signal.Signals(signum).name if signum > 0 else None
    except ValueError:
        return None


def _raise_stop(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _ignore_stop_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _stop_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


class _StopFlag:
    signal: int | None = None


@contextmanager
def stop_signals() -> Iterator[_StopFlag]:
    """SIGINT and SIGTERM set `.signal` inside (main thread only); the old handlers come back."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum, frame) -> None:
        flag.signal = flag.signal or signum

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)



def kill_tree(pid: int) -> None:
    """SIGKILL process `pid` and every process under it (kernels in their own groups too)."""
    try:
        root = psutil.Process(pid)
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


# ---- a notebook's kernel, stopped with the task -----------------------------------------------
@contextmanager
def kernels_interrupted() -> Iterator[_StopFlag]:
    """Inside, SIGINT and SIGTERM interrupt this process's child processes (papermill's kernel:
    its training saves its checkpoint, its cell fails) instead of this process.

    The kernels are interrupted again every `INTERRUPT_AGAIN_S` (a cell that began meanwhile)
    and killed after `STOP_GRACE_S`. With no child yet (a kernel starting), the signal stops this
    process at once: SystemExit(128 + signal), or KeyboardInterrupt for SIGINT.
    """
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum, frame) -> None:
        first = flag.signal is None
        flag.signal = flag.signal or signum
        if not _children():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")
            raise SystemExit(128 + signum)
        _interrupt_children()
        if first:
            threading.Thread(target=_interrupt_until_done, daemon=True).start()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _children() -> list[psutil.Process]:
    try:
        return psutil.Process().children()
    except psutil.Error:
        return []


def _interrupt_children() -> None:
    for child in _children():
        try:  # a kernel leads its own process group: interrupt it as Jupyter does
            if hasattr(os, "killpg") and os.getpgid(child.pid) == child.pid:
                os.killpg(child.pid, signal.SIGINT)
            else:
                os.kill(child.pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            pass


def _interrupt_until_done() -> None:
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        time.sleep(INTERRUPT_AGAIN_S)
        _interrupt_children()
    for child in _children():
        kill_tree(child.pid)

