"""Checkpoints: atomic under a kill mid-write, refused when damaged or foreign; load_backbone."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from discomm_lite import load_backbone, load_model
from discomm_lite.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from discomm_lite.config import Config, make_config
from discomm_lite.engine import train

PAYLOAD = {"config": {}, "student": {}, "teacher": {}, "optimizer": {}, "step": 3, "epoch": 0,
           "rng": {}}


def test_kill_during_write_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {**PAYLOAD, "step": 1})
    writer = textwrap.dedent(f"""
        import torch
        from discomm_lite.checkpoint import save_checkpoint
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
    config = make_config("synthetic-toy")  # global clipping, coding rate on the student
    old = {k: v for k, v in config.to_dict().items()
           if k not in ("clip_grad_mode", "coding_rate_scope", "coding_rate_input")}
    save_checkpoint(path, {**PAYLOAD, "config": old})
    load_checkpoint(path, config)
    load_checkpoint(path, config.replace(coding_rate_input=None))  # bits: the student's anyway
    with pytest.raises(CheckpointError, match="clip_grad_mode: checkpoint 'global' vs now"):
        load_checkpoint(path, config.replace(clip_grad_mode="per_param"))
    with pytest.raises(CheckpointError, match="coding_rate_input: checkpoint 'student' vs now"):
        load_checkpoint(path, config.replace(coding_rate_input="student_teacher_mean"))


def test_load_backbone_extracts_the_teachers_features(tmp_path):
    config = make_config("synthetic-toy", train_subset=128, batch_size=64, epochs=1,
                         eval_every=0, n_bits=8, head_hidden_dim=32, out_dir=str(tmp_path))
    run = train(config, progress=False)
    backbone = load_backbone(tmp_path / "checkpoint.pt")
    assert not backbone.training
    images = torch.rand(5, 3, 32, 32)
    run.teacher.backbone.eval()
    with torch.no_grad():
        expected = run.teacher.backbone(images)
        got = backbone(images)
    assert got.shape == (5, backbone.num_features)
    torch.testing.assert_close(got, expected)


def test_load_model_rebuilds_either_model_without_moving_the_rng(tmp_path):
    config = make_config("synthetic-toy", train_subset=128, batch_size=64, epochs=1,
                         eval_every=0, n_bits=8, head_hidden_dim=32, out_dir=str(tmp_path))
    run = train(config, progress=False)
    path = tmp_path / "checkpoint.pt"
    rng = torch.get_rng_state()
    teacher, student = load_model(path), load_model(load_checkpoint(path), "student")
    assert torch.equal(torch.get_rng_state(), rng)
    for rebuilt, trained in ((teacher, run.teacher), (student, run.student)):
        state = trained.state_dict()
        assert rebuilt.state_dict().keys() == state.keys()
        assert all(torch.equal(v, state[k]) for k, v in rebuilt.state_dict().items())
    assert not torch.equal(teacher.head.mlp[0].weight, student.head.mlp[0].weight)
    with pytest.raises(ValueError, match="'teacher' or 'student'"):
        load_model(path, "ema")
