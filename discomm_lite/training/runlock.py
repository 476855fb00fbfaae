"""One writer per run folder (and per batch task): a lock file naming its holder, made atomically.

Two runs writing one folder mix their checkpoints and metrics without any error, so `train` takes
`<run folder>/run.lock` first (under torchrun, rank 0 for all); a sweep's point and a study's run
take their own locks the same way (`FileLock`). The file is created with O_CREAT | O_EXCL, which
succeeds for one process only (also on NFS), and holds the holder's pid, host, start times (and
SLURM job); it is removed when the holder ends, by an exception or a stop signal too.

Only a process killed outright (kill -9, a kernel restarted, a lost machine) leaves its lock behind.
A lock whose holder is provably dead on this host (its pid gone or a zombie, or the pid now naming
a process that started after the holder) is taken over with a `StaleLockWarning` that says why. A
live holder keeps its lock, and so does a holder on another host (a cluster node whose processes
cannot be seen from here): the refusal says how to clear it once that run is known to be gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import psutil

LOCK_FILE = "run.lock"
# Two readings of one process's start time agree to within this (psutil rounds to clock ticks).
_SAME_START_S = 1.0
# An older lock records only when it was taken, on the wall clock; a process start time computed
# from the boot time can drift from it by seconds, so a reuse is proven only well past that.
_CLOCK_SLACK_S = 60.0
# A take-over marker older than this was left by a process killed while taking over.
_TAKEOVER_STALE_S = 30.0


class LockHeld(RuntimeError):
    """A live process, or one on another host, holds the lock (or its file names no holder)."""


class RunFolderLocked(LockHeld):
    """Another run holds the run folder's lock."""


class StaleLockWarning(UserWarning):
    """A lock left by a dead process was taken over."""


def holder_record() -> dict:
    """What a lock file says about the process that takes it: pid, host, times, command, job."""
    me = psutil.Process()
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "started_at": time.time(),
              "process_started_at": me.create_time(), "command": " ".join(sys.argv)[:300]}
    job = slurm_job()
    if job:
        record["slurm_job"] = job
    return record


def slurm_job() -> str | None:
    """The SLURM job this process runs in ("123" or "123_4" for an array task), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def dead_holder(holder: dict) -> str | None:
    """Why `holder` provably no longer holds its lock (a phrase), or None if it may still.

    Only a holder on this host can be proven dead: its pid runs no process, runs a zombie, or runs
    a process that started after the holder did (the pid was reused). A holder on another host is
    never taken for dead.
    """
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        process = psutil.Process(pid)
        status, started = process.status(), process.create_time()
    except psutil.NoSuchProcess:
        return f"process {pid} no longer runs"
    except psutil.AccessDenied:  # another user's live process
        return None
    if status == psutil.STATUS_ZOMBIE:
        return f"process {pid} has exited (a zombie its parent has not collected)"
    holder_started, slack = holder.get("process_started_at"), _SAME_START_S
    if not isinstance(holder_started, (int, float)):  # an older lock: its lock time instead
        holder_started, slack = _lock_time(holder), _CLOCK_SLACK_S
    if holder_started is not None and started > holder_started + slack:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        return (f"pid {pid} now names another process, started {when}, after the lock was "
                f"taken")
    return None


class FileLock:
    """The lock file `path`: a context manager, or `acquire()` / `release()`.

    `what` names what it guards in messages ("the run folder /x", "the sweep point n_bits=8").
    """

    held_error: type[LockHeld] = LockHeld

    def __init__(self, path: str | Path, what: str | None = None) -> None:
        self.path = Path(path)
        self.what = what or str(self.path)
        self.held = False
        self.holder = holder_record()

    def acquire(self) -> None:
        """Create the lock file; take over a stale one (warning why); else raise `held_error`.

        SIGINT and SIGTERM wait while the file is created and written, so that a stop signal
        never leaves a lock file that this lock does not know it holds.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(50):  # a take-over by another process in progress: look again shortly
            with _signals_deferred():
                if self._create():
                    return
                holder = read_holder(self.path)
                reason = dead_holder(holder) if holder else None
                if reason is None:
                    raise self.held_error(self.refusal(holder))
                if self._take_over(holder):
                    warnings.warn(f"Took over the stale lock {self.path} of {self.what}: it was "
                                  f"left by {_who(holder)}, and {reason}.", StaleLockWarning,
                                  stacklevel=2)
                    continue
            time.sleep(0.1)
        raise self.held_error(self.refusal(read_holder(self.path)))

    def release(self) -> None:
        """Remove the lock file if this lock holds it (never another process's)."""
        with _signals_deferred():
            if self.held and read_holder(self.path) == self.holder:
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> FileLock:
        try:
            self.acquire()
        except BaseException:  # a deferred signal raised as acquire returned
            self.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def refusal(self, holder: dict | None) -> str:
        """Why the lock cannot be taken, as one message."""
        if holder is None:
            return (f"{self.what} is locked by {self.path}, which does not say who holds it (a "
                    f"process may be creating it right now); if none does, delete {self.path}.")
        return (f"{self.what} is held by {_who(holder)}{_since(holder)}. If that process is "
                f"gone{_gone_hint(holder)}, delete {self.path}.")

    def _create(self) -> bool:
        try:
            handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        try:
            with os.fdopen(handle, "w") as f:
                json.dump(self.holder, f)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        self.held = True
        return True

    def _take_over(self, stale: dict) -> bool:
        """Delete the lock file if it still names `stale`; True if this process deleted it.

        Processes that find one stale lock together race for a marker file (O_EXCL); the one that
        makes it deletes the lock, the others look again and find the winner's lock.
        """
        marker = self.path.with_name(self.path.name + ".takeover")
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            try:
                if time.time() - marker.stat().st_mtime > _TAKEOVER_STALE_S:
                    marker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        try:
            if read_holder(self.path) != stale:
                return False
            self.path.unlink(missing_ok=True)
            return True
        finally:
            marker.unlink(missing_ok=True)


class RunLock(FileLock):
    """The lock of run folder `folder` (`<folder>/run.lock`), taken by `train`."""

    held_error = RunFolderLocked

    def __init__(self, folder: str | Path) -> None:
        super().__init__(Path(folder) / LOCK_FILE, f"the run folder {folder}")

    def refusal(self, holder: dict | None) -> str:
        """Why the folder is taken: a live run, or an unreadable lock file."""
        folder = self.path.parent
        if holder is None:
            return (f"The run folder {folder} is locked by {self.path}, which does not say who "
                    "holds it (a run may be creating it right now). If no run uses the folder, "
                    f"delete {self.path} and start again.")
        return (f"The run folder {folder} is in use by {_who(holder)}{_since(holder)}: two runs "
                "in one folder would mix their checkpoints and metrics. Wait for that run to "
                "end, or give this run its own folder (another --out / out_dir). If that run is "
                f"gone{_gone_hint(holder)}, delete {self.path}.")


def read_holder(path: Path) -> dict | None:
    """The holder a lock file records, or None if it cannot be read as such.

    Also reads the study claims of earlier versions ("pid 123 on host").
    """
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        old = re.fullmatch(r"pid (\d+) on (\S+)\s*", text)
        return {"pid": int(old[1]), "host": old[2]} if old else None
    return holder if isinstance(holder, dict) else None


def _who(holder: dict) -> str:
    job = f" (SLURM job {holder['slurm_job']})" if holder.get("slurm_job") else ""
    return f"process {holder.get('pid')} on {holder.get('host')}{job}"


def _since(holder: dict) -> str:
    if "started" not in holder:
        return ""
    return f" since {holder.get('started')} ({holder.get('command', '')!r})"


def _gone_hint(holder: dict) -> str:
    if holder.get("host") == socket.gethostname():
        return ""
    job = holder.get("slurm_job")
    return (f" (its machine lost, or its job ended: squeue -j {job})" if job
            else " (its machine lost)")


def _lock_time(holder: dict) -> float | None:
    """When the lock was taken (epoch seconds), from the fields of this or an older version."""
    if isinstance(holder.get("started_at"), (int, float)):
        return float(holder["started_at"])
    try:
        return datetime.strptime(str(holder.get("started")), "%Y-%m-%d %H:%M:%S %z").timestamp()
    except ValueError:
        return None


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM are held back inside, and delivered on leaving (POSIX; elsewhere a
    no-op)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
