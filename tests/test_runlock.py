"""One writer per run folder: the lock, its refusals, stale locks taken over (issues 15, 25)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import psutil
import pytest

from discomm_lite.training.runlock import (
    LOCK_FILE,
    FileLock,
    LockHeld,
    RunFolderLocked,
    RunLock,
    StaleLockWarning,
)


def test_the_lock_records_its_holder_and_is_removed_on_release(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        holder = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert lock.held
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderLocked, match=rf"in use by process {os.getpid()} on "
                                                  rf"{socket.gethostname()}.*another --out"):
            RunLock(tmp_path).acquire()
        assert (tmp_path / LOCK_FILE).exists()  # the refused one removed nothing


def test_an_exception_releases_the_lock(tmp_path):
    with pytest.raises(RuntimeError, match="a run failed"), RunLock(tmp_path):
        raise RuntimeError("a run failed")
    RunLock(tmp_path).acquire()  # free again


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid no longer runs
    return dead.pid


def _write_lock(path, **holder):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "started": "earlier",
                                "command": "x", **holder}))


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning_saying_why(tmp_path):
    # A student's kernel killed while training: its lock names a pid that no longer runs.
    pid = _dead_pid()
    _write_lock(tmp_path / LOCK_FILE, pid=pid)
    with pytest.warns(StaleLockWarning, match=rf"Took over the stale lock {tmp_path / LOCK_FILE} "
                                              rf"of the run folder {tmp_path}: it was left by "
                                              rf"process {pid} .*no longer runs"):
        with RunLock(tmp_path):
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / (LOCK_FILE + ".takeover")).exists()


def test_a_pid_reused_by_a_later_process_is_not_taken_for_the_holder(tmp_path):
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # The lock's holder started an hour before the process that has its pid now.
        started = psutil.Process(later.pid).create_time()
        _write_lock(tmp_path / LOCK_FILE, pid=later.pid, process_started_at=started - 3600)
        with pytest.warns(StaleLockWarning, match=rf"pid {later.pid} now names another process"):
            RunLock(tmp_path).acquire()
        # The same live process as the holder (its own start time): refused.
        _write_lock(tmp_path / "b" / LOCK_FILE, pid=later.pid, process_started_at=started)
        with pytest.raises(RunFolderLocked, match=rf"in use by process {later.pid}"):
            RunLock(tmp_path / "b").acquire()
    finally:
        later.kill()
        later.wait()


def test_a_zombie_holder_is_dead(tmp_path):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.05)  # exited, not yet collected by its parent (this process)
    _write_lock(tmp_path / LOCK_FILE, pid=zombie.pid)
    with pytest.warns(StaleLockWarning, match="a zombie"):
        RunLock(tmp_path).acquire()
    zombie.wait()


def test_a_live_holder_on_this_host_keeps_its_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path / LOCK_FILE, pid=holder.pid, started_at=time.time())
        with pytest.raises(RunFolderLocked, match=rf"in use by process {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_an_old_study_claim_of_a_dead_process_is_stale(tmp_path):
    claim = tmp_path / "g__x__seed0.claim"
    claim.write_text(f"pid {_dead_pid()} on {socket.gethostname()}\n")  # the claims of before
    with pytest.warns(StaleLockWarning, match="no longer runs"):
        with FileLock(claim, "the study run g__x__seed0"):
            assert json.loads(claim.read_text())["pid"] == os.getpid()
    claim.write_text("pid 1 on elsewhere\n")
    with pytest.raises(LockHeld, match="held by process 1 on elsewhere"):
        FileLock(claim).acquire()


def _take(path, ready, results):
    ready.wait()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lock = FileLock(path)
            lock.acquire()
        results.put("held")
        time.sleep(1)  # hold it while the others look
        lock.release()
    except LockHeld:
        results.put("refused")


def test_processes_finding_one_stale_lock_together_take_it_over_once(tmp_path):
    path = tmp_path / "point.lock"
    _write_lock(path, pid=_dead_pid())
    context = multiprocessing.get_context()
    ready, results = context.Event(), context.Queue()
    takers = [context.Process(target=_take, args=(path, ready, results)) for _ in range(4)]
    for p in takers:
        p.start()
    time.sleep(0.5)
    ready.set()
    outcomes = sorted(results.get(timeout=120) for _ in takers)
    for p in takers:
        p.join(timeout=60)
    assert outcomes == ["held", "refused", "refused", "refused"]


def test_a_lock_from_another_host_is_never_taken_for_stale(tmp_path):
    # A cluster node's lock: its pid says nothing here, even one that runs nothing on this host.
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": "node7",
                                                  "slurm_job": "4242_3"}))
    with pytest.raises(RunFolderLocked, match=r"in use by process \d+ on node7 \(SLURM job "
                                              r"4242_3\).*its job ended: squeue -j 4242_3"):
        RunLock(tmp_path).acquire()


def test_an_unreadable_lock_file_still_refuses(tmp_path):
    (tmp_path / LOCK_FILE).write_text("")  # a holder between create and write, or damaged
    with pytest.raises(RunFolderLocked, match="does not say who holds it"):
        RunLock(tmp_path).acquire()


def test_release_never_removes_another_holders_lock(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))  # replaced
    lock.release()
    assert (tmp_path / LOCK_FILE).exists()


@pytest.mark.parametrize("when", ["creating", "written"])
def test_a_stop_signal_while_the_lock_is_taken_leaves_no_lock(tmp_path, monkeypatch, when):
    from discomm_lite.training import runlock
    from discomm_lite.training.monitor import sigterm_raises

    real_dump = runlock.json.dump

    def dump_with_a_signal(obj, f):
        if when == "creating":
            os.kill(os.getpid(), signal.SIGTERM)
        real_dump(obj, f)
        if when == "written":
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runlock.json, "dump", dump_with_a_signal)
    with pytest.raises(SystemExit) as info, sigterm_raises(), RunLock(tmp_path):
        time.sleep(5)  # not reached: the signal is raised as the lock is taken
    assert info.value.code == 143
    assert not (tmp_path / LOCK_FILE).exists()
