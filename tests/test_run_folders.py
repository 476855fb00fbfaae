"""A folder is written only once recognised as a run folder, and only the atomic writer's own
temporaries are removed from it (issue 25)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tinyrun import tiny_config

from discomm_lite.api import train
from discomm_lite.atomic import atomic_write, temporaries
from discomm_lite.cli import main
from discomm_lite.training import runlock
from discomm_lite.training.start import NotARunFolder, check_run_folder


@pytest.fixture
def no_lock(monkeypatch):
    """A lock that fails the test when taken: the run got past the folder check."""
    def taken(self):
        pytest.fail(f"the run went on to lock {self.path}")

    monkeypatch.setattr(runlock.RunLock, "acquire", taken)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_unrelated_folder_with_files_of_a_runs_names_is_refused_and_left_as_it_was(
        tmp_path, capsys):
    project = tmp_path / "my_project"
    project.mkdir()
    (project / "config.json").write_text('{"name": "my-app", "version": "1.0"}\n')
    (project / "metrics.jsonl").write_text('{"accuracy": 0.9}\n')
    before = snapshot(project)
    status = main(["train", "--preset", "synthetic-toy", "--out", str(project), "--epochs", "1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"error: The run folder {project} is not empty and not a discomm_lite "
                          "run folder (its config.json and metrics.jsonl are not a run's; it "
                          "holds 'config.json', 'metrics.jsonl')")
    assert "Give the run a new or empty folder" in err
    assert snapshot(project) == before  # nothing written, not even a lock


def test_a_folder_of_other_files_is_refused_naming_a_few(tmp_path, no_lock):
    for name in ("a.txt", "b.csv", "c.png", "d", "e"):
        (tmp_path / name).write_text("mine")
    with pytest.raises(NotARunFolder, match=r"it holds no config.json, metrics.jsonl or "
                                            r"checkpoint.pt of a run; it holds 'a.txt', 'b.csv', "
                                            r"'c.png', 'd', \.\.\.\)"):
        train(tiny_config(tmp_path), progress=False)


@pytest.mark.parametrize("where", ["root", "home"])
def test_the_filesystem_root_and_the_home_folder_are_refused(where, tmp_path, monkeypatch,
                                                               no_lock):
    monkeypatch.setenv("HOME", str(tmp_path))  # Path.home(): a home folder of the test's own
    folder = Path("/") if where == "root" else tmp_path
    what = "a filesystem root" if where == "root" else "your home folder"
    with pytest.raises(NotARunFolder, match=f"is {what}: a run writes"):
        train(tiny_config(folder), progress=False)
    with pytest.raises(NotARunFolder, match=what):
        check_run_folder(Path("~") if where == "home" else Path("/tmp/.."))


def test_a_file_is_no_run_folder(tmp_path, no_lock):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotARunFolder, match="is a file, not a folder"):
        train(tiny_config(tmp_path / "file"), progress=False)


@pytest.mark.parametrize("files", [
    {},  # new or empty
    {"config.json": json.dumps(tiny_config().to_dict())},  # a run's (a notes file beside it)
    {"metrics.jsonl": '{"kind": "train", "step": 2, "loss": 0.7}\n'},  # a run stopped early
    {"metrics.jsonl": ""},  # a run killed between its first two writes
    {"checkpoint.pt": "checked when read"},
    {"run.lock": "{}"},  # a run in progress: the lock says so
    {"execution.log": "", "00_quickstart.ipynb": "{}"},  # a sweep's point, before its run
    {"imagefolder/train/a/0.png": ""},  # notebook 07's smoke data, written before its run
])
def test_new_empty_and_run_folders_are_accepted(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    if files:
        (tmp_path / "notes.md").write_text("my notes")
    check_run_folder(tmp_path)
    check_run_folder(tmp_path / "new" / "folder")


def test_only_the_temporaries_the_atomic_writer_makes_are_found(tmp_path):
    made = []
    atomic_write(tmp_path / "checkpoint.pt",
                 lambda f: made.extend(os.listdir(tmp_path)))  # the temporary, while writing
    assert len(made) == 1 and made[0].startswith("checkpoint.pt.")
    for name in (made[0], "checkpoint.pt.backup.tmp", "checkpoint.pt.123-0.tmp",
                 "checkpoint.pt.123-DEADBEEF.tmp", "checkpoint.pt.x.123-deadbeef.tmp",
                 "checkpoint.pt.123-deadbeef.tmp.old", "other.pt.123-deadbeef.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in temporaries(tmp_path, "checkpoint.pt")] == [made[0]]
