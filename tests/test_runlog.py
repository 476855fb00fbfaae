"""metrics.jsonl: whole-line appends, atomic truncation (a kill loses nothing); damaged last lines
are dropped."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from discomm_lite.training import runlog
from discomm_lite.training.runlog import DamagedRecordWarning, RunLog

# In the engine's order: step 2 ends an epoch (train, eval, then its checkpoint), and the head
# reset that starts the next epoch is logged at step 2 too, after that checkpoint.
RECORDS = [{"kind": "train", "step": 2, "loss": 0.5}, {"kind": "eval", "step": 2, "knn": 0.3},
           {"kind": "reinit", "step": 2}, {"kind": "train", "step": 4, "loss": 0.25},
           {"kind": "eval", "step": 4, "knn": 0.4}]


def write(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_append_then_read_round_trips_and_each_call_leaves_whole_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    runlog.start(path)
    for i, record in enumerate(RECORDS):
        runlog.append(path, record)
        # Flushed: another reader sees exactly the records so far, each on its own line.
        text = path.read_text()
        assert text.endswith("\n") and text.count("\n") == i + 1
    assert runlog.read(path) == RECORDS
    assert runlog.read(path, "train") == [r for r in RECORDS if r["kind"] == "train"]
    assert runlog.read(path, "reinit") == [{"kind": "reinit", "step": 2}]
    assert runlog.read(tmp_path / "absent.jsonl") == []


def test_concurrent_appends_never_interleave(tmp_path):
    # Several processes append long records to one file at once; every line must parse.
    path = tmp_path / "metrics.jsonl"
    writer = textwrap.dedent(f"""
        import sys
        from discomm_lite.training import runlog
        for i in range(300):
            runlog.append({str(path)!r}, {{"kind": "train", "step": i,
                                           "writer": int(sys.argv[1]), "pad": "x" * 3000}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(w)]) for w in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    records = runlog.read(path)
    assert len(records) == 1200
    for w in range(4):
        assert [r["step"] for r in records if r["writer"] == w] == list(range(300))


def test_truncate_keeps_the_records_up_to_the_step_through_a_rename(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write(path, RECORDS)
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    original_lines = path.read_text().splitlines()
    runlog.truncate_after(path, 2)  # the reset at step 2 follows its checkpoint: dropped
    assert runlog.read(path) == RECORDS[:2]
    assert path.read_text().splitlines() == original_lines[:2]  # the lines as written
    assert path.stat().st_ino != inode  # a new file renamed into place, not rewritten in place
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_truncation_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    write(path, RECORDS)
    before = path.read_bytes()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runlog.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        runlog.truncate_after(path, 2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize("tail", ['{"kind": "train", "step": 6, "lo', '{"kind', "\x00\x00\x00",
                                  "[1, 2]\n"])
def test_a_damaged_last_line_is_dropped_with_a_warning_naming_the_file(tmp_path, tail):
    path = tmp_path / "metrics.jsonl"
    write(path, RECORDS, tail)
    with pytest.warns(DamagedRecordWarning, match=str(path)):
        assert runlog.read(path) == RECORDS
    # Resuming truncates through the same reader: the damaged line is gone afterwards.
    with pytest.warns(DamagedRecordWarning):
        runlog.truncate_after(path, 4)
    assert runlog.read(path) == RECORDS


def test_a_damaged_line_before_the_last_is_an_error_with_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{broken\n" + json.dumps(RECORDS[1]) + "\n")
    with pytest.raises(ValueError, match=rf"{path}, line 2"):
        runlog.read(path)


def test_last_record_of_a_kind():
    assert runlog.last(RECORDS, "eval") == RECORDS[4]
    assert runlog.last(RECORDS, "train") == RECORDS[3]
    assert runlog.last(RECORDS, "warning") is None
    assert runlog.last([], "eval") is None


def test_run_log_keeps_writes_and_calls_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    runlog.start(path)
    seen, records = [], []
    log = RunLog(path, records, callbacks=[seen.append])
    for record in RECORDS[:3]:
        log.emit(record)
    assert records == seen == runlog.read(path) == RECORDS[:3]
    memory_only = RunLog(None, [])
    memory_only.emit(RECORDS[0])
    assert memory_only.records == RECORDS[:1]


@pytest.mark.slow
def test_a_run_resumes_past_a_damaged_last_record(tmp_path):
    from discomm_lite.api import train
    from discomm_lite.config import make_config

    config = make_config("synthetic-toy", train_subset=128, batch_size=64, n_bits=8,
                         head_hidden_dim=16, epochs=2, eval_every=0, log_every=1,
                         out_dir=str(tmp_path / "run"))
    train(config, max_steps=2, progress=False)  # the checkpoint of step 2
    path = tmp_path / "run" / "metrics.jsonl"
    with path.open("a") as f:
        f.write('{"kind": "train", "step": 3, "lo')  # the process died mid-write
    with pytest.warns(DamagedRecordWarning, match=str(path)):
        run = train(config, progress=False)
    assert [r["step"] for r in run.records] == [1, 2, 3, 4]
    assert runlog.read(path) == run.records


@pytest.mark.slow
def test_a_kill_during_the_rewrite_loses_nothing(tmp_path):
    # A resume rewrites the log to a checkpoint's step; killed at random moments of that rewrite,
    # the file must always hold every record (the old file, or the same records rewritten).
    path = tmp_path / "metrics.jsonl"
    records = [{"kind": "train", "step": s, "loss": 1 / s, "pad": "x" * 200}
               for s in range(1, 60_001)]
    write(path, records)
    expected = path.read_bytes()
    rewriter = textwrap.dedent(f"""
        from discomm_lite.training import runlog
        while True:
            runlog.truncate_after({str(path)!r}, 60_000)  # keeps them all: the same content
    """)
    kills = 0
    for delay in (0.0, 0.05, 0.13, 0.29):
        proc = subprocess.Popen([sys.executable, "-c", rewriter])
        while proc.poll() is None and not list(tmp_path.glob("metrics.jsonl.*.tmp")):
            pass  # the kill lands while a rewrite is under way
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += proc.returncode == -signal.SIGKILL
        assert path.read_bytes() == expected
        assert runlog.read(path) == records
    assert kills == 4
    # The temporaries of the killed rewrites are what a next run's start removes.
    assert all(p.name.endswith(".tmp") for p in tmp_path.iterdir() if p != path)


def test_an_append_cut_short_by_a_full_disk_is_taken_back(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    write(path, RECORDS[:2])
    before = path.read_bytes()
    real_write = os.write

    def half_written(handle, data):
        return real_write(handle, data[: len(data) // 2])  # what a nearly full disk does

    monkeypatch.setattr(runlog.os, "write", half_written)
    with pytest.raises(OSError, match=r"only \d+ of \d+ bytes .* \(is the disk full\?\)"):
        runlog.append(path, RECORDS[2])
    monkeypatch.undo()
    assert path.read_bytes() == before  # no partial line for a later append to follow
    runlog.append(path, RECORDS[2])
    assert runlog.read(path) == RECORDS[:3]


def test_sigterm_before_the_loop_still_releases_the_run_folder(tmp_path):
    # The loop turns SIGTERM into a checkpoint; before it (loading data), sigterm_raises makes
    # the signal an exception, so the lock is released rather than left stale.
    from discomm_lite.training.monitor import sigterm_raises
    from discomm_lite.training.runlock import LOCK_FILE, RunLock

    with pytest.raises(SystemExit) as info, sigterm_raises(), RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).exists()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert info.value.code == 143
    assert not (tmp_path / LOCK_FILE).exists()
