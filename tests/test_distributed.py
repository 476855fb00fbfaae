"""Two gloo processes on CPU compute what one process computes on the same global batch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from discomm_lite.method import coding_rate as rate_maths
from discomm_lite.method import losses
from discomm_lite.training.runlock import LOCK_FILE, RunLock

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

pytestmark = pytest.mark.distributed

WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from discomm_lite import distributed
    from discomm_lite.method import coding_rate as rate_maths
    from discomm_lite.method import dino, losses
    distributed.setup_from_env("cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    # The losses must not read the device (no host sync): a .item() anywhere in them fails here.
    def no_item(self):
        raise AssertionError("a loss called Tensor.item()")
    item, torch.Tensor.item = torch.Tensor.item, no_item
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(8, 16, generator=g) * 2 for _ in range(3)]
    teacher = [torch.randn(8, 16, generator=g) * 2 for _ in range(2)]
    local = [s[rank * 4:(rank + 1) * 4].clone().requires_grad_(True) for s in student]
    local_t = [t[rank * 4:(rank + 1) * 4] for t in teacher]
    rate = rate_maths.coding_rate(local[0], 0.05)
    loss, parts = losses.bits_loss(local, local_t, coding_rate_weight=0.3)
    simdino, _ = losses.simdino_loss(local, local_t)
    center = dino.update_center(torch.zeros(1, 16), local_t, momentum=0.5)
    loss.backward()
    # SimDINO's default --reduce_cov 0: this process's Gram matrix, the global N in the scalar.
    own = local[0].detach().clone().requires_grad_(True)
    own_rate = rate_maths.coding_rate(own, 0.05, scope="per_process")
    own_rate.backward()
    torch.Tensor.item = item
    # Each process's loss covers its half of the batch; their mean is the global loss.
    mean_loss = torch.stack([loss.detach(), simdino.detach()])
    dist.all_reduce(mean_loss)
    mean_loss /= world
    # DDP divides each process's parameter gradient by the number of processes, so a row's
    # effective gradient is its local gradient / world.
    grads = [s.grad / world for s in local] + [own.grad]
    full = [torch.cat([torch.empty_like(x) for _ in range(world)]) for x in grads]
    for x, f in zip(grads, full):
        dist.all_gather(list(f.chunk(world)), x)
    own_rates = torch.empty(world)
    dist.all_gather(list(own_rates.chunk(world)), own_rate.detach().reshape(1))
    if rank == 0:
        torch.save({"rate": rate.detach(), "loss": mean_loss[0], "simdino": mean_loss[1],
                    "grads": full[:-1], "coding_rate": parts["coding_rate"], "center": center,
                    "own_rates": own_rates, "own_grads": full[-1]}, sys.argv[1])
    dist.barrier()
    dist.destroy_process_group()
    # gloo's worker threads can abort interpreter shutdown in this bare script ("terminate
    # called without an active exception", ~1 run in 6); the results are already saved.
    os._exit(0)
""")


def _naive_rate(rows, eps, global_batch):
    """0.5 logdet(I + K / (N eps) Zn^T Zn) in float64, N given (the batch over all processes)."""
    rows = rows.double()
    unit = rows / rows.norm(dim=1, keepdim=True)
    matrix = torch.eye(rows.shape[1], dtype=torch.float64) + \
        rows.shape[1] / (global_batch * eps) * unit.T @ unit
    return 0.5 * torch.logdet(matrix)


@pytest.fixture(scope="module")
def two_process_losses(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("losses")
    script, out = tmp_path / "worker.py", tmp_path / "out.pt"
    script.write_text(WORKER)
    result = subprocess.run([*TORCHRUN, str(script), str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


def test_coding_rate_and_bits_loss_equal_single_process_on_global_batch(two_process_losses):
    got = two_process_losses
    g = torch.Generator().manual_seed(0)
    student = [(torch.randn(8, 16, generator=g) * 2).requires_grad_(True) for _ in range(3)]
    teacher = [torch.randn(8, 16, generator=g) * 2 for _ in range(2)]
    rate = rate_maths.coding_rate(student[0], 0.05)
    loss, _ = losses.bits_loss(student, teacher, coding_rate_weight=0.3)
    simdino, _ = losses.simdino_loss(student, teacher)
    loss.backward()
    # scope "global" (SimDINO's --reduce_cov 1): the Gram matrix of the whole batch.
    assert got["rate"].item() == pytest.approx(_naive_rate(student[0], 0.05, 8).item(), rel=1e-5)
    torch.testing.assert_close(got["rate"], rate.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["simdino"], simdino.detach(), rtol=1e-5, atol=1e-5)
    for g_dist, s in zip(got["grads"], student, strict=True):
        torch.testing.assert_close(g_dist, s.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["center"], 0.5 * torch.cat(teacher).mean(0, keepdim=True))


def test_per_process_coding_rate_is_simdino_reduce_cov_0(two_process_losses):
    got = two_process_losses
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(8, 16, generator=g) * 2
    for rank in range(2):
        # Each process: the Gram matrix of its own 4 rows, divided by the global N = 8.
        own = rows[rank * 4:(rank + 1) * 4].double().requires_grad_(True)
        expected = _naive_rate(own, 0.05, global_batch=8)
        expected.backward()
        assert got["own_rates"][rank].item() == pytest.approx(expected.item(), rel=1e-5)
        torch.testing.assert_close(got["own_grads"][rank * 4:(rank + 1) * 4],
                                   own.grad.float(), rtol=1e-4, atol=1e-6)
    # It is not the rate of the global batch.
    assert got["own_rates"].mean().item() < _naive_rate(rows, 0.05, 8).item() - 0.1


def _train_records(args, out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


@pytest.mark.parametrize("method", ["bits", "simdino"])
def test_two_processes_train_like_one(tmp_path, method):
    # GroupNorm backbone, no head BatchNorm: no batch statistics, so per-process batches change
    # nothing (on GPUs, DDP runs convert BatchNorm to SyncBatchNorm instead).
    args = ["-m", "discomm_lite", "train", "--preset", "synthetic-toy", "--method", method,
            "--backbone", "convnet-small-gn", "--head_norm", "none", "--train_subset", "128",
            "--batch_size", "32",
            "--epochs", "2", "--reinit_every", "1", "--n_bits", "16", "--head_hidden_dim", "64",
            "--log_every", "1", "--eval_every", "0", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, *args, "--out", str(one)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run([*TORCHRUN, *args, "--out", str(two)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    a = [r for r in _train_records(args, one) if r["kind"] == "train"]
    b = [r for r in _train_records(args, two) if r["kind"] == "train"]
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    assert [r["step"] for r in _train_records(args, two) if r["kind"] == "reinit"] == [4]
    # Sums run in another order over 2 processes (~1e-7); for BITS a teacher logit within that
    # of 0 can flip its bit, a discrete change, so later steps agree to ~1e-4, not 1e-7.
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "coding_rate"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-3, abs=1e-5), (ra["step"], key)


def test_under_torchrun_rank_0_holds_the_lock_and_a_refusal_stops_every_process(tmp_path):
    # A run folder held by this (live) process: both ranks must refuse, none wait for the other.
    out = tmp_path / "held"
    lock = RunLock(out)
    lock.acquire()
    args = ["-m", "discomm_lite", "train", "--preset", "synthetic-toy", "--backbone",
            "convnet-small-gn", "--train_subset", "128", "--batch_size", "32", "--epochs", "1",
            "--n_bits", "16", "--head_hidden_dim", "64", "--eval_every", "0", "--device", "cpu",
            "--out", str(out)]
    refused = subprocess.run([*TORCHRUN, *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0
    assert refused.stderr.count(f"error: The run folder {out} is in use by process "
                                f"{os.getpid()}") == 2  # rank 0's own refusal, and rank 1's
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()  # untouched
    lock.release()
    done = subprocess.run([*TORCHRUN, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / LOCK_FILE).exists()  # rank 0 released it
