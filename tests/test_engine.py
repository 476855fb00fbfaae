"""The training engine end to end on the embedded synthetic images, on CPU.

A CLI smoke fit, the resume round-trip (bit-for-bit on CPU, across a head re-init and a
mid-epoch stop), a SIGTERM during a run, an injected NaN, and a forced channel collapse.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from discomm_lite.api import train
from discomm_lite.config import make_config
from discomm_lite.method import get_method, losses
from discomm_lite.training import engine, optim, setup
from discomm_lite.training.engine import (
    ChannelCollapseWarning,
    NonFiniteLossError,
    NonFiniteStateError,
    RunFolderLocked,
)
from discomm_lite.training.start import RunFolderError

ROOT = Path(__file__).resolve().parents[1]

# 512 images, batch 64: 8 steps an epoch, a few seconds an epoch on 2 cores.
TINY = dict(train_subset=512, test_subset=128, batch_size=64, n_bits=16, head_hidden_dim=64,
            epochs=3, warmup_epochs=1, log_every=2, eval_every=1, lr=2e-3, lr_end=1e-4)


def tiny_config(tmp_path, **changes):
    return make_config("synthetic-toy", **{**TINY, "out_dir": str(tmp_path / "run"), **changes})


def records(run_dir, kind=None):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    out = [json.loads(x) for x in lines if x.strip()]
    return [r for r in out if kind is None or r["kind"] == kind]


@pytest.mark.slow
def test_cli_smoke_fit_writes_config_metrics_checkpoint(tmp_path):
    out = tmp_path / "cli"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "discomm_lite", "train", "--preset", "synthetic-toy", "--out",
         str(out), "--epochs", "2", "--train_subset", "512", "--test_subset", "128",
         "--batch_size", "64", "--n_bits", "16", "--head_hidden_dim", "64", "--log_every", "4",
         "--eval_every", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    print(f"CLI smoke fit: {time.perf_counter() - started:.1f} s")
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert (out / "checkpoint.pt").is_file()
    train_records = records(out, "train")
    assert [r["step"] for r in train_records] == [4, 8, 12, 16]
    evals = records(out, "eval")
    assert [r["epoch"] for r in evals] == [1, 2]
    assert 0 <= evals[-1]["knn20_top1"] <= 1
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final["final_eval"]["step"] == 16


@pytest.mark.slow
def test_resume_continues_the_same_trajectory(tmp_path):
    # Uninterrupted: 3 epochs, head re-init every epoch, teacher head kept as EMA.
    changes = dict(reinit_every=1, teacher_head_policy="keep", eval_every=0)
    full = train(tiny_config(tmp_path / "a", **changes), progress=False)
    # Interrupted mid-epoch 2 (step 11 of 24), then resumed from its checkpoint.
    config = tiny_config(tmp_path / "b", **changes)
    train(config, max_steps=11, progress=False)
    assert torch.load(Path(config.out_dir) / "checkpoint.pt", weights_only=True)["step"] == 11
    resumed = train(config, progress=False)
    for k, v in full.student.state_dict().items():
        assert torch.equal(v, resumed.student.state_dict()[k]), k
    for k, v in full.teacher.state_dict().items():
        assert torch.equal(v, resumed.teacher.state_dict()[k]), k
    # metrics.jsonl continues without duplicates; losses after the stop are identical.
    a = {r["step"]: r for r in records(full.out_dir, "train")}
    b = records(config.out_dir, "train")
    assert len({r["step"] for r in b}) == len(b)
    assert [r["step"] for r in records(config.out_dir, "reinit")] == [8, 16]
    for r in b:
        if r["step"] > 12:  # the first interval after the stop is aggregated differently
            assert r["loss"] == a[r["step"]]["loss"]


@pytest.mark.slow
def test_a_crash_after_a_head_reset_resumes_with_the_same_records(tmp_path):
    changes = dict(reinit_every=1, eval_every=0, checkpoint_every=1)
    full = train(tiny_config(tmp_path / "a", **changes), progress=False)

    def power_cut(record):
        if record["kind"] == "train" and record["step"] == 12:
            raise RuntimeError("power cut")

    config = tiny_config(tmp_path / "b", **changes)
    with pytest.raises(RuntimeError, match="power cut"):
        train(config, callbacks=[power_cut], progress=False)
    # The last checkpoint is the end of epoch 1 (step 8); the head reset logged at step 8 came
    # after it, so the resumed run draws and logs it again, once.
    assert torch.load(Path(config.out_dir) / "checkpoint.pt", weights_only=True)["step"] == 8
    assert [r["step"] for r in records(config.out_dir, "reinit")] == [8]
    resumed = train(config, progress=False)
    assert ([(r["kind"], r["step"]) for r in records(config.out_dir)]
            == [(r["kind"], r["step"]) for r in records(full.out_dir)])
    for k, v in full.teacher.state_dict().items():
        assert torch.equal(v, resumed.teacher.state_dict()[k]), k


@pytest.mark.slow
def test_a_reset_warms_the_new_heads_lr_up_and_logs_its_health(tmp_path):
    # 3 epochs of 8 steps, a reset at steps 8 and 16, the head's lr ramped over 4 steps and the
    # teacher head following at 0.5 for 2 steps; the backbone keeps the schedule's values.
    config = tiny_config(tmp_path, reinit_every=1, eval_every=0, log_every=1, warmup_epochs=0,
                         reinit_warmup_steps=4, reinit_catchup_steps=2,
                         reinit_teacher_momentum=0.5)
    run = train(config, progress=False)
    steps = {r["step"]: r for r in run.records if r["kind"] == "train"}
    for reset in (8, 16):
        ratios = [steps[reset + i]["head_lr"] / steps[reset + i]["lr"] for i in range(1, 6)]
        assert ratios == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])  # the record of step s+1
        assert [steps[reset + i]["head_momentum"] for i in (1, 2, 3)] == [
            0.5, 0.5, steps[reset + 3]["momentum"]]
    assert all(steps[s]["head_lr"] == steps[s]["lr"] for s in range(1, 9))  # before a reset
    health = [r for r in run.records if r["kind"] == "reset_health"]
    assert [(r["reset_step"], r["step"]) for r in health] == [(8, 16), (16, 24)]
    before = steps[8]["coding_rate"]
    assert health[0]["coding_rate_before"] == before
    assert health[0]["coding_rate_min"] == min(steps[s]["coding_rate"] for s in range(9, 17))
    # a reset whose period cannot end before the run does is skipped on request
    whole = train(tiny_config(tmp_path / "b", reinit_every=2, eval_every=0, epochs=5,
                              reinit_partial_period=False), progress=False)
    assert [r["step"] for r in whole.records if r["kind"] == "reinit"] == [16]  # not 32: 4 + 2 > 5


@pytest.mark.slow
def test_finished_run_is_returned_without_training(tmp_path):
    config = tiny_config(tmp_path, epochs=1, eval_every=0)
    first = train(config, progress=False)
    again = train(config, progress=False)
    assert [r["step"] for r in again.records] == [r["step"] for r in first.records]
    for k, v in first.teacher.state_dict().items():
        assert torch.equal(v, again.teacher.state_dict()[k])


@pytest.mark.slow
def test_resume_with_another_config_is_refused(tmp_path):
    train(tiny_config(tmp_path, epochs=1, eval_every=0), progress=False)
    with pytest.raises(Exception, match="n_bits: checkpoint 16 vs now 32"):
        train(tiny_config(tmp_path, epochs=1, eval_every=0, n_bits=32), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_a_checkpoint_and_exits_128_plus_it_without_the_completion_json(
        tmp_path, stop):
    out = tmp_path / "term"
    args = [sys.executable, "-m", "discomm_lite", "train", "--preset", "synthetic-toy",
            "--out", str(out), "--epochs", "40", "--train_subset", "512", "--batch_size", "64",
            "--n_bits", "16", "--head_hidden_dim", "64", "--eval_every", "0", "--log_every", "1"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists()
                                          and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(stop)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + stop, err  # 143, 130: not "finished" to a scheduler
    assert stdout == ""  # no completion JSON
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 3 <= saved["step"] < 40 * 8
    stopped = records(out, "interrupted")
    assert stopped and f"step {saved['step']}" in stopped[-1]["message"]
    assert err.strip().splitlines()[-1] == f"interrupted: {stopped[-1]['message']}"
    assert not (out / "run.lock").exists()  # released on the way out


@pytest.mark.slow
def test_sigterm_as_soon_as_the_folder_is_locked_exits_143_and_releases_it(tmp_path):
    # The signal lands while the run loads its data or builds its models, before the loop turns
    # signals into a checkpoint: the lock must not be left behind as a stale one.
    out = tmp_path / "early"
    proc = subprocess.Popen(
        [sys.executable, "-m", "discomm_lite", "train", "--preset", "synthetic-toy", "--out",
         str(out), "--train_subset", "512", "--batch_size", "64", "--n_bits", "16",
         "--head_hidden_dim", "64", "--eval_every", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "run.lock").exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert stdout == "" and "interrupted: " in err
    assert not (out / "run.lock").exists()


@pytest.mark.slow
def test_a_second_run_on_a_folder_in_use_is_refused_and_the_first_finishes_intact(tmp_path):
    out = tmp_path / "shared"
    first = subprocess.Popen(
        [sys.executable, "-m", "discomm_lite", "train", "--preset", "synthetic-toy", "--out",
         str(out), "--epochs", "3", "--train_subset", "512", "--test_subset", "128",
         "--batch_size", "64", "--n_bits", "16", "--head_hidden_dim", "64", "--log_every", "2",
         "--eval_every", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "run.lock").exists():
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second one started"
    with pytest.raises(RunFolderLocked, match=rf"{out} is in use by process {first.pid}"):
        train(tiny_config(tmp_path, n_bits=32, out_dir=str(out)), progress=False)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    # The first run's files are its own alone: config, checkpoint and every record.
    assert json.loads((out / "config.json").read_text())["n_bits"] == 16
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["config"]["n_bits"] == 16 and saved["step"] == 24
    assert [r["step"] for r in records(out, "train")] == list(range(2, 25, 2))
    assert [r["step"] for r in records(out, "eval")] == [16, 24]  # eval_every 2, and the end
    assert not (out / "run.lock").exists()


@pytest.mark.slow
def test_a_folder_with_metrics_but_no_checkpoint_is_refused_not_wiped(tmp_path):
    config = tiny_config(tmp_path, epochs=1, eval_every=0)
    train(config, max_steps=4, progress=False)
    metrics = Path(config.out_dir) / "metrics.jsonl"
    before = metrics.read_bytes()
    (Path(config.out_dir) / "checkpoint.pt").rename(tmp_path / "moved.pt")
    with pytest.raises(RunFolderError, match=r"2 records .* up to step 4\) but no checkpoint.pt"
                                             r".*put its checkpoint.pt back.*delete .*metrics"):
        train(config, progress=False)
    assert metrics.read_bytes() == before
    (tmp_path / "moved.pt").rename(Path(config.out_dir) / "checkpoint.pt")  # as the error says
    assert train(config, progress=False).records[-1]["step"] == 8


@pytest.mark.slow
def test_temporaries_of_a_save_cut_short_are_removed_at_the_next_start(tmp_path):
    config = tiny_config(tmp_path, epochs=1, eval_every=0)
    train(config, max_steps=2, progress=False)
    run_dir = Path(config.out_dir)
    stale = [run_dir / "checkpoint.pt.4242-deadbeef.tmp",
             run_dir / "metrics.jsonl.4242-0badc0de.tmp"]
    # A user's own files of that shape, which atomic_write never names so: kept (issue 25).
    kept = ["checkpoint.pt.backup.tmp", "metrics.jsonl.4242-0.tmp",
            "checkpoint.pt.4242-DEADBEEF.tmp", "checkpoint.pt.x.4242-deadbeef.tmp"]
    for path in [*stale, *(run_dir / name for name in kept)]:
        path.write_bytes(b"half a file")
    with pytest.warns(UserWarning, match=r"Removed 2 temporary file\(s\) .*checkpoint.pt.4242"):
        train(config, progress=False)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["checkpoint.pt", "config.json", "metrics.jsonl", *kept])


@pytest.mark.parametrize("max_steps", [0, -1, 2.5])
def test_max_steps_that_would_train_nothing_are_refused(tmp_path, max_steps):
    with pytest.raises(ValueError, match=rf"max_steps = {max_steps} would train nothing"):
        train(tiny_config(tmp_path), max_steps=max_steps, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_non_finite_buffer_is_never_saved(tmp_path, monkeypatch):
    # A finite loss with an inf BatchNorm statistic (as lr 1e3 gave): the loss check cannot see it.
    config = tiny_config(tmp_path, epochs=3, eval_every=0, log_every=1)
    real = engine.train_step

    def poisoned(state, *args):
        values, host = real(state, *args)
        if state.step == 11:  # inside epoch 2, after the epoch-1 checkpoint
            state.teacher.backbone.net.features[1].running_var[5] = float("inf")
        return values, host

    monkeypatch.setattr(engine, "train_step", poisoned)
    with pytest.raises(NonFiniteStateError, match=r"The teacher's backbone.net.features.1."
                                                  r"running_var holds NaN or inf values at step "
                                                  r"16: .* without saving"):
        train(config, progress=False)
    saved = torch.load(Path(config.out_dir) / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 8  # the last good state
    assert all(torch.isfinite(v).all() for v in saved["teacher"].values() if v.is_floating_point())
    assert not (Path(config.out_dir) / "run.lock").exists()
    assert [r["step"] for r in records(config.out_dir, "train")][-1] == 16  # its steps logged


@pytest.mark.slow
def test_injected_nan_stops_with_step_and_parts_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, epochs=3, eval_every=0, log_every=1)
    real = losses.bits_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 11:  # step 11: inside epoch 2, after the epoch-1 checkpoint
            loss = loss * float("nan")
        return loss, parts

    monkeypatch.setattr(losses, "bits_loss", poisoned)
    with pytest.raises(NonFiniteLossError) as info:
        train(config, progress=False)
    assert "step 11" in str(info.value) and "coding_rate" in str(info.value)
    saved = torch.load(Path(config.out_dir) / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 8
    assert all(torch.isfinite(v).all() for v in saved["student"].values()
               if v.is_floating_point())


@pytest.mark.slow
def test_forced_collapse_is_detected_with_numbers(tmp_path, monkeypatch):
    from discomm_lite.models import model as model_module

    real_head = model_module.make_head

    def constant_head(config, in_dim):
        head = real_head(config, in_dim)
        last = head.mlp[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, 3.0)  # every bit 1 for every image
        head.reset_parameters = lambda: None
        return head

    monkeypatch.setattr(model_module, "make_head", constant_head)
    config = tiny_config(tmp_path, epochs=1, eval_every=0, log_every=2, lr=1e-6, lr_end=1e-7)
    with pytest.warns(ChannelCollapseWarning, match=r"100% of the teacher's bits are constant"):
        run = train(config, progress=False)
    warning = [r for r in run.records if r["kind"] == "warning"]
    assert warning and "coding rate" in warning[0]["message"]
    assert os.path.exists(Path(config.out_dir) / "checkpoint.pt")


@pytest.mark.parametrize("changes,message", [
    (dict(global_size=64, local_size=16), "global_size"),
    (dict(n_local=2, local_size=48, global_size=64), "global_size"),
    (dict(batch_size=4096), "larger than the training set"),
])
def test_bad_run_inputs_fail_before_training_with_a_clear_message(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        train(tiny_config(tmp_path, **changes), progress=False)


def test_batch_must_split_over_processes():
    from discomm_lite.views.pipeline import check_batch

    with pytest.raises(ValueError, match="multiple of the number of processes"):
        check_batch(1000, batch_size=6, world_size=4)
    with pytest.raises(ValueError, match="at least 8"):
        check_batch(1000, batch_size=4, world_size=8)


@pytest.mark.slow
def test_cli_evaluate_writes_the_suite_json(tmp_path):
    train(tiny_config(tmp_path, epochs=1, eval_every=0), progress=False)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    result = subprocess.run([sys.executable, "-m", "discomm_lite", "evaluate", "--checkpoint",
                             str(checkpoint)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    written = json.loads(checkpoint.with_suffix(".eval.json").read_text())
    for key in ("knn20_top1", "knn200_top1", "linear_top1", "map_cosine", "map_hamming",
                "effective_dim", "effective_rank", "map_vs_bits", "code_mean_bit_entropy"):
        assert key in written, key
    assert 0 <= written["map_hamming"] <= 1 and 1 <= written["effective_dim"] <= 256
    assert written["retrieval_protocol"].startswith("self-search")
    assert written["linear_protocol"].startswith("fast proxy")
    assert "linear_dino_top1" not in written


@pytest.mark.slow
def test_cli_evaluate_with_a_retrieval_split_and_dinos_probe(tmp_path):
    train(tiny_config(tmp_path, epochs=1, eval_every=0), progress=False)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    split = tmp_path / "split"
    from PIL import Image

    for part, n in (("query", 2), ("database", 3)):
        for label in ("a", "b"):
            (split / part / label).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (200 if label == "a" else 20, 90, 60 + 40 * i)).save(
                    split / part / label / f"{i}.png")
    result = subprocess.run(
        [sys.executable, "-m", "discomm_lite", "evaluate", "--checkpoint", str(checkpoint),
         "--retrieval-root", str(split), "--dino-linear-epochs", "1", "--train-subset", "64",
         "--test-subset", "32"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    # Other options than the checkpoint's own: a file of its own, which records them.
    written = json.loads(checkpoint.with_suffix(
        ".eval-train_subset=64,test_subset=32,retrieval=split,dino_linear_epochs=1.json"
    ).read_text())
    assert written["options"] == {"dataset": "synthetic", "data_root": None, "train_subset": 64,
                                  "test_subset": 32, "retrieval_k": None,
                                  "retrieval_root": str(split.resolve()),
                                  "dino_linear_epochs": 1}
    assert not checkpoint.with_suffix(".eval.json").exists()
    assert written["retrieval_protocol"].startswith("query/database split")
    assert 0 <= written["map_cosine"] <= 1 and 0 <= written["linear_dino_top1"] <= 1
    assert written["linear_dino_protocol"].startswith("DINO protocol")


def _dino_clip_gradients(parameters, clip):
    """DINO's utils.clip_gradients, as a loop: each gradient clipped to norm `clip` alone."""
    for p in parameters:
        if p.grad is not None:
            norm = p.grad.norm(2)
            coef = clip / (norm + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)


def _parameters_with_grads(seed):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(*shape)) for shape in ((3, 4), (7,), (2, 2, 2), (5,))]
    for p, scale in zip(params[:3], (0.1, 5.0, 30.0), strict=True):
        p.grad = torch.randn(p.shape, generator=g) * scale
    return params  # the last one has no gradient


@pytest.mark.parametrize("clip", [0.3, 1.0, 3.0])
def test_per_parameter_clipping_equals_dinos_loop(clip):
    params, reference = _parameters_with_grads(0), _parameters_with_grads(0)
    before = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params[:3]]))
    norm = optim.clip_gradients(params, clip, "per_param")
    _dino_clip_gradients(reference, clip)
    for p, r in zip(params, reference, strict=True):
        if r.grad is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, r.grad, rtol=1e-6, atol=0)
    # Gradients within the bound are left exactly as they were, the others have norm ~clip.
    for p, original in zip(params[:3], _parameters_with_grads(0)[:3], strict=True):
        if original.grad.norm() <= clip:
            assert torch.equal(p.grad, original.grad)
        else:
            assert p.grad.norm().item() == pytest.approx(clip, rel=1e-5)
    torch.testing.assert_close(norm, before)  # the norm of all gradients before clipping


def test_global_clipping_is_torchs_and_zero_leaves_gradients():
    params, reference = _parameters_with_grads(1), _parameters_with_grads(1)
    norm = optim.clip_gradients(params, 1.0, "global")
    expected = torch.nn.utils.clip_grad_norm_(reference, 1.0)
    torch.testing.assert_close(norm, expected)
    for p, r in zip(params[:3], reference[:3], strict=True):
        assert torch.equal(p.grad, r.grad)
    untouched = _parameters_with_grads(1)
    optim.clip_gradients(untouched, 0.0, "per_param")
    for p, r in zip(untouched[:3], _parameters_with_grads(1)[:3], strict=True):
        assert torch.equal(p.grad, r.grad)
    with pytest.raises(ValueError, match="per_param"):
        optim.clip_gradients(params, 1.0, "layerwise")


def _weights(module):
    """Parameters only: BatchNorm running statistics move with every train-mode forward."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


@pytest.mark.slow
def test_pretrained_head_is_loaded_unless_reinit_at_start(tmp_path):
    source = train(tiny_config(tmp_path / "source", epochs=1, eval_every=0), progress=False)
    checkpoint = str(tmp_path / "source" / "run" / "checkpoint.pt")
    pretrained = _weights(source.teacher.head)
    # One step: the first step's warmup lr is 0, so the weights are still where they started.
    kept = train(tiny_config(tmp_path / "kept", pretrained=checkpoint, eval_every=0),
                 max_steps=1, progress=False)
    for model in (kept.student, kept.teacher):
        for k, v in _weights(model.head).items():
            assert torch.equal(v, pretrained[k]), k
        for k, v in _weights(model.backbone).items():
            assert torch.equal(v, _weights(source.teacher.backbone)[k]), k
    assert not [r for r in kept.records if r["kind"] == "reinit"]

    redrawn = train(tiny_config(tmp_path / "redrawn", pretrained=checkpoint, eval_every=0,
                                reinit_at_start=True), max_steps=1, progress=False)
    assert [r["step"] for r in redrawn.records if r["kind"] == "reinit"] == [0]
    weights = [k for k in pretrained if k.endswith("weight")]
    assert all(not torch.equal(_weights(redrawn.student.head)[k], pretrained[k]) for k in weights)
    for k, v in _weights(redrawn.student.backbone).items():
        assert torch.equal(v, _weights(source.teacher.backbone)[k]), k


@pytest.mark.slow
def test_pretrained_head_of_another_shape_needs_reinit_at_start(tmp_path):
    train(tiny_config(tmp_path / "source", epochs=1, eval_every=0), progress=False)
    checkpoint = str(tmp_path / "source" / "run" / "checkpoint.pt")
    config = tiny_config(tmp_path / "other", pretrained=checkpoint, n_bits=32, eval_every=0)
    with pytest.raises(ValueError, match=r"mlp\.4\.weight.*n_bits=16.*reinit_at_start=True"):
        setup.build_state(config, get_method(config.method), torch.device("cpu"))
    setup.build_state(config.replace(reinit_at_start=True), get_method(config.method),
                      torch.device("cpu"))


@pytest.mark.slow
def test_pretrained_dino_run_continues_with_its_center(tmp_path):
    dino = dict(method="dino", n_prototypes=32, head_bottleneck_dim=16, eval_every=0, epochs=1)
    train(tiny_config(tmp_path / "source", **dino), progress=False)
    checkpoint = tmp_path / "source" / "run" / "checkpoint.pt"
    saved = torch.load(checkpoint, weights_only=True)["method_state"]["center"]
    assert saved.abs().sum() > 0
    config = tiny_config(tmp_path / "next", pretrained=str(checkpoint), **dino)
    state = setup.build_state(config, get_method("dino"), torch.device("cpu"))
    assert torch.equal(state.method_state["center"], saved)
