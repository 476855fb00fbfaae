"""One writer per run folder: the lock file, its refusals, stale locks (issue 15)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from discomm_lite.training.runlock import LOCK_FILE, RunFolderLocked, RunLock


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


def test_a_stale_lock_of_a_dead_process_is_reported_with_how_to_clear_it(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid no longer runs
    (tmp_path / LOCK_FILE).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started": "earlier", "command": "x"}))
    with pytest.raises(RunFolderLocked) as info:
        RunLock(tmp_path).acquire()
    message = str(info.value)
    assert f"stale lock: {tmp_path / LOCK_FILE} was left by process {dead.pid}" in message
    assert f"rm '{tmp_path / LOCK_FILE}'" in message
    (tmp_path / LOCK_FILE).unlink()  # what the message says to do
    RunLock(tmp_path).acquire()


def test_a_lock_from_another_host_is_never_taken_for_stale(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunFolderLocked, match="in use by process 1 on elsewhere"):
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
