"""One writer per run folder: a lock file naming its holder, created atomically.

Two runs writing one folder mix their checkpoints and metrics without any error, so `train` takes
`<run folder>/run.lock` first (under torchrun, rank 0 for all). The file is created with
O_CREAT | O_EXCL, which succeeds for one process only (also on NFS), and holds the holder's pid,
host and start time; it is removed when the run ends, by an exception or a stop signal too. Only
a process killed outright (kill -9, a lost machine) leaves it behind: a later run finds that the
pid no longer runs on this host and says how to clear the stale lock, rather than guessing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "run.lock"


class RunFolderLocked(RuntimeError):
    """Another run holds the run folder's lock (or left a stale one)."""


class RunLock:
    """The lock of run folder `folder`: a context manager, or `acquire()` / `release()`."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.held = False
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                       "command": " ".join(sys.argv)[:300]}

    def acquire(self) -> None:
        """Create the lock file, or raise RunFolderLocked saying who holds it and what to do.

        SIGINT and SIGTERM wait while the file is created and written, so that a stop signal
        never leaves a lock file that this lock does not know it holds.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _signals_deferred():
            try:
                handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                raise RunFolderLocked(self._refusal()) from None
            try:
                with os.fdopen(handle, "w") as f:
                    json.dump(self.holder, f)
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
            self.held = True

    def release(self) -> None:
        """Remove the lock file if this lock holds it (never another process's)."""
        if self.held and _read_holder(self.path) == self.holder:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunLock:
        try:
            self.acquire()
        except BaseException:  # a deferred signal raised as acquire returned
            self.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _refusal(self) -> str:
        """Why the folder is taken: a live run, a stale lock, or an unreadable lock file."""
        holder = _read_holder(self.path)
        folder = self.path.parent
        if holder is None:
            return (f"The run folder {folder} is locked by {self.path}, which does not say who "
                    "holds it (a run may be creating it right now). If no run uses the folder, "
                    f"delete {self.path} and start again.")
        who = f"process {holder.get('pid')} on {holder.get('host')}"
        since = f" since {holder.get('started')} ({holder.get('command', '')!r})"
        if holder.get("host") == self.holder["host"] and not _is_running(holder.get("pid")):
            return (f"The run folder {folder} holds a stale lock: {self.path} was left by {who}"
                    f"{since}, which no longer runs (it was killed before it could remove the "
                    f"lock). No run uses the folder: delete the lock (rm '{self.path}') and "
                    "train again to resume from its last checkpoint.")
        return (f"The run folder {folder} is in use by {who}{since}: two runs in one folder would "
                "mix their checkpoints and metrics. Wait for that run to end, or give this run "
                f"its own folder (another --out / out_dir). If that run is gone (its machine "
                f"lost), delete {self.path}.")


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


def _read_holder(path: Path) -> dict | None:
    """The holder a lock file records, or None if it cannot be read as such."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _is_running(pid) -> bool:
    """Whether a process `pid` exists on this host (one of another user counts).

    Signal 0 probes a process on POSIX; on Windows os.kill would end it, so there every holder is
    taken to be running (the message then says to delete the lock if that run is gone).
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
