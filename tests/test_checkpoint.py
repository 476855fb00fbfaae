"""Checkpoints: atomic under a kill mid-write, refused when damaged or foreign, never running code
when read; finite; load_backbone."""

import math
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from discomm_lite import load_backbone, load_model
from discomm_lite.api import train
from discomm_lite.config import Config, make_config
from discomm_lite.models.model import make_model
from discomm_lite.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    non_finite_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

PAYLOAD = {"config": {}, "student": {}, "teacher": {}, "optimizer": {}, "step": 3, "epoch": 0,
           "rng": {}}


def test_kill_during_write_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {**PAYLOAD, "step": 1})
    writer = textwrap.dedent(f"""
        import torch
        from discomm_lite.training.checkpoint import save_checkpoint
        big = torch.randn(64, 1024, 1024)  # 256 MB: a write that takes a while
        step = 2
        while True:
            save_checkpoint({str(path)!r}, {{"config": {{}}, "student": {{"w": big}},
                            "teacher": {{}}, "optimizer": {{}}, "step": step, "epoch": 0,
                            "rng": {{}}}})
            step += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer])
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("checkpoint.pt.*.tmp")):
        time.sleep(0.01)
    assert list(tmp_path.glob("checkpoint.pt.*.tmp")), "the writer never started a write"
    os.kill(proc.pid, signal.SIGKILL)  # mid-write: no handler, no cleanup
    proc.wait()
    payload = load_checkpoint(path)  # whichever complete checkpoint was last renamed in
    assert payload["step"] >= 1
    if payload["step"] > 1:
        assert payload["student"]["w"].shape == (64, 1024, 1024)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not_a_checkpoint"])
def test_damaged_files_are_refused_with_the_path(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {**PAYLOAD, "student": {"w": torch.randn(1000)}})
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_missing_checkpoint_says_where_it_looked(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_of_another_configuration_is_refused_naming_the_fields(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {**PAYLOAD, "config": Config(n_bits=64).to_dict()})
    with pytest.raises(CheckpointError, match="n_bits: checkpoint 64 vs now 32"):
        load_checkpoint(path, Config(n_bits=32))
    # where the run goes may change, what it computes may not
    load_checkpoint(path, Config(n_bits=64, device="cpu", log_every=3, out_dir="elsewhere"))


def test_checkpoint_older_than_the_new_fields_resumes_where_it_would_run_the_same(tmp_path):
    path = tmp_path / "checkpoint.pt"
    # What the code before those fields did: global clipping, the coding rate on the student,
    # views cut from one image.
    config = make_config("synthetic-toy", clip_grad_mode="global", coding_rate_input="student",
                         redraw_factors="")
    old = {k: v for k, v in config.to_dict().items()
           if k not in ("clip_grad_mode", "coding_rate_scope", "coding_rate_input",
                        "redraw_factors")}
    save_checkpoint(path, {**PAYLOAD, "config": old})
    load_checkpoint(path, config)
    load_checkpoint(path, config.replace(coding_rate_input=None))  # bits: the student's anyway
    with pytest.raises(CheckpointError, match="clip_grad_mode: checkpoint 'global' vs now"):
        load_checkpoint(path, config.replace(clip_grad_mode="per_param"))
    with pytest.raises(CheckpointError, match="coding_rate_input: checkpoint 'student' vs now"):
        load_checkpoint(path, config.replace(coding_rate_input="student_teacher_mean"))
    with pytest.raises(CheckpointError, match="redraw_factors: checkpoint '' vs now 'colour'"):
        load_checkpoint(path, config.replace(redraw_factors="colour"))


def _rebuilt(path: Path, which: str) -> torch.nn.Module:
    """The checkpoint's model rebuilt by hand, not by `load_model`: a reference for it."""
    payload = torch.load(path, weights_only=True)
    model = make_model(Config.from_dict(payload["config"]))
    model.load_state_dict(payload[which])
    return model


def test_load_backbone_extracts_the_teachers_features(trained_checkpoint):
    backbone = load_backbone(trained_checkpoint)
    assert not backbone.training
    images = torch.rand(5, 3, 32, 32)
    reference = _rebuilt(trained_checkpoint, "teacher").backbone.eval()
    with torch.no_grad():
        expected = reference(images)
        got = backbone(images)
    assert got.shape == (5, backbone.num_features)
    torch.testing.assert_close(got, expected)


def test_load_model_rebuilds_either_model_without_moving_the_rng(trained_checkpoint):
    path = trained_checkpoint
    rng = torch.get_rng_state()
    teacher, student = load_model(path), load_model(load_checkpoint(path), "student")
    assert torch.equal(torch.get_rng_state(), rng)
    for rebuilt, which in ((teacher, "teacher"), (student, "student")):
        state = _rebuilt(path, which).state_dict()
        assert rebuilt.state_dict().keys() == state.keys()
        assert all(torch.equal(v, state[k]) for k, v in rebuilt.state_dict().items())
    assert not torch.equal(teacher.head.mlp[0].weight, student.head.mlp[0].weight)
    with pytest.raises(ValueError, match="'teacher' or 'student'"):
        load_model(path, "ema")


# ---- loading runs no code (issue 15) -----------------------------------------------------------


class WritesMarker:
    """Unpickling this object calls open(marker, "w"): the marker file appears if code runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_crafted(path, marker, kind):
    """A file that a pickle-running loader would execute: a checkpoint-shaped torch.save file
    (every required key, so it would pass the key check too) or a bare pickle."""
    payload = {**PAYLOAD, "format_version": 2, "config": Config().to_dict(),
               "student": WritesMarker(marker)}
    if kind == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))


@pytest.mark.parametrize("kind", ["torch.save", "bare pickle"])
@pytest.mark.parametrize("loader", ["load_checkpoint", "load_model", "load_backbone",
                                    "evaluate_checkpoint", "resume", "pretrained", "cli evaluate"])
def test_a_crafted_pickle_is_refused_by_every_load_path_and_runs_nothing(tmp_path, kind, loader,
                                                                        capsys):
    from discomm_lite.cli import main
    from discomm_lite.evaluation.suite import evaluate_checkpoint

    marker = tmp_path / "MARKER"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = run_dir / "checkpoint.pt"
    write_crafted(path, marker, kind)
    calls = {
        "load_checkpoint": lambda: load_checkpoint(path),
        "load_model": lambda: load_model(path),
        "load_backbone": lambda: load_backbone(path),
        "evaluate_checkpoint": lambda: evaluate_checkpoint(path),
        "resume": lambda: train(make_config("synthetic-toy", out_dir=str(run_dir)),
                                progress=False),
        "pretrained": lambda: train(make_config("synthetic-toy", pretrained=str(path)),
                                    progress=False),
    }
    if loader == "cli evaluate":
        assert main(["evaluate", "--checkpoint", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {path} is not a discomm_lite")
    else:
        with pytest.raises(CheckpointError, match="is not a discomm_lite checkpoint") as info:
            calls[loader]()
        assert str(path) in str(info.value)
        assert "io.open" in str(info.value)  # what it would have run
        assert "refused before anything in it ran" in str(info.value)
    assert not marker.exists()
    assert not (run_dir / "run.lock").exists()  # a refused resume releases its folder


def test_a_plain_pickle_of_data_is_named_as_such(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(CheckpointError, match="it is a bare Python pickle"):
        load_checkpoint(path)


@pytest.mark.slow
def test_checkpoints_hold_tensors_and_plain_values_only(tmp_path):
    config = make_config("synthetic-toy", method="dino", train_subset=128, batch_size=64,
                         epochs=1, eval_every=0, n_bits=8, head_hidden_dim=32,
                         out_dir=str(tmp_path))
    train(config, progress=False)
    path = tmp_path / "checkpoint.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    payload = torch.load(path, weights_only=True)  # torch's own tensors-only reader
    assert payload["format_version"] == 2 and payload["method_state"]["center"].shape == (1, 4096)


def _draws():
    return (torch.rand(3).tolist(), random.random(), random.gauss(0, 1),
            np.random.rand(2).tolist(), np.random.randn())


def test_rng_state_round_trips_through_a_tensors_only_checkpoint(tmp_path):
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    np.random.randn()  # and one in NumPy's (has_gauss = 1)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {**PAYLOAD, "rng": rng_state()})
    expected = _draws()
    _draws()  # move every generator on
    set_rng_state(load_checkpoint(path)["rng"])
    assert _draws() == expected


def test_a_format_1_checkpoint_is_read_without_running_code_and_its_rng_converted(tmp_path):
    # Written as before issue 15: NumPy's state as its get_state() tuple (a NumPy array inside),
    # Python's as its getstate() tuple.
    random.gauss(0, 1)
    np.random.randn()
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": np.random.get_state()}
    path = tmp_path / "checkpoint.pt"
    torch.save({**PAYLOAD, "format_version": 1, "rng": rng}, path)
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    expected = _draws()
    payload = load_checkpoint(path)
    assert payload["rng"]["numpy"]["key"].dtype == torch.int64
    set_rng_state(payload["rng"])
    assert _draws() == expected


def test_a_future_format_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({**PAYLOAD, "format_version": 3}, path)
    with pytest.raises(CheckpointError, match="format version 3"):
        load_checkpoint(path)


def test_a_checkpoint_with_non_finite_weights_is_not_evaluated(tmp_path, trained_checkpoint):
    path = tmp_path / "checkpoint.pt"
    payload = load_checkpoint(trained_checkpoint)
    payload["teacher"]["head.norm.running_var"][3] = float("inf")  # saved before issue 15
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match=r"teacher's head.norm.running_var holds NaN or inf"):
        load_backbone(path)
    load_model(path, "student")  # the student is finite


def test_non_finite_tensors_names_each_bad_float_tensor():
    g = torch.Generator().manual_seed(0)
    named = [(f"t{i}", torch.randn(5, generator=g)) for i in range(6)]
    named[1][1][2] = float("nan")
    named[4][1][0] = -float("inf")
    named.append(("steps", torch.tensor([2**62])))  # integers are never non-finite
    named.append(("none", None))
    naive = [n for n, t in named if t is not None and t.is_floating_point()
             and any(not math.isfinite(x) for x in t.tolist())]
    assert non_finite_tensors(named) == naive == ["t1", "t4"]


def test_a_full_disk_is_a_checkpoint_error_and_the_previous_file_stays(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {**PAYLOAD, "step": 1})
    before = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"Cannot write the checkpoint .*unexpected pos.* "
                                              r"MiB are free there\). The previous checkpoint"):
        save_checkpoint(path, {**PAYLOAD, "step": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_checkpoint_has_the_permissions_of_the_run_folders_other_files(tmp_path):
    umask = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "checkpoint.pt", PAYLOAD)
        (tmp_path / "config.json").write_text("{}")
    finally:
        os.umask(umask)
    mode = (tmp_path / "checkpoint.pt").stat().st_mode & 0o777
    assert mode == (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644
