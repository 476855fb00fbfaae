"""The coding rate of paper Eq. 9 and its place in the losses of BITS and SimDINO (pure maths).

R(Z) = 1/2 logdet(I + K / (N eps) Zn^T Zn) on the L2-normalised (N, K) logits Zn: the rate at
which a Gaussian source with Zn's covariance must be coded to precision eps, MCR^2's (Yu et al.
2020) measure of how much of the K-dimensional space the batch fills. BITS uses it as a
differentiable surrogate for the entropy H(Z) of the messages (the channel's use).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from discomm_lite import distributed
from discomm_lite.choices import CODING_RATE_INPUTS, CODING_RATE_SCOPES


def global_batch_size(n_local: int, declared: int | None = None) -> int:
    """N, the batch summed over processes, known without asking the device.

    Every process holds the same number of rows (the engine splits each global batch evenly), so
    N = n_local x world size. `declared` (the config's batch_size) is checked against it.
    """
    global_batch = n_local * distributed.world_size()
    if declared is not None and declared != global_batch:
        raise ValueError(
            f"global_batch = {declared} but {distributed.world_size()} process(es) hold "
            f"{n_local} rows each ({global_batch} in all): pass the batch the views come from."
        )
    return global_batch


def coding_rate(z: Tensor, eps: float = 0.05, *, scope: str = "global",
                global_batch: int | None = None) -> Tensor:
    """Coding rate of L2-normalised rows: 0.5 logdet(I_K + K / (N eps) Zn^T Zn) (Eq. 9).

    Equal to SimDINO's `calc_expansion` (simdino/main_dino.py) on normalised features. eps plays
    the role of eps^2 in the paper (SimDINO/CroVCA code). Always float32 with autocast disabled:
    under bf16 autocast the Gram matrix and the identity added to it would otherwise lose the
    precision the logdet of a nearly singular matrix needs.

    Args:
        z: (n, K) rows on this process.
        eps: the coding-rate eps.
        scope: under torch.distributed, "global" sums the K x K Gram matrix over all processes
            (with gradient): 1 or 8 processes give the value of the global batch (SimDINO's
            `--reduce_cov 1`). "per_process" keeps this process's Gram matrix (SimDINO's default
            `--reduce_cov 0`), still divided by the global N as SimDINO's `p / (m N eps)` does.
            Without a process group both are the same.
        global_batch: N, the batch over all processes; default n x world size (`global_batch_size`).
    """
    if z.dim() != 2:
        raise ValueError(f"coding_rate expects (N, K) logits, got shape {tuple(z.shape)}.")
    with _autocast_off(z):
        return _rate_of_rows(F.normalize(z.float(), dim=1), eps, scope, global_batch)


def _autocast_off(x: Tensor):
    return torch.autocast(x.device.type, enabled=False)


def _rate_of_rows(rows: Tensor, eps: float, scope: str, global_batch: int | None) -> Tensor:
    """0.5 logdet(I + K / (N eps) R^T R) of float32 rows (N, K) as given, through a Cholesky."""
    if scope not in CODING_RATE_SCOPES:
        raise ValueError(f"scope must be one of {CODING_RATE_SCOPES}, got {scope!r}.")
    n_bits = rows.shape[1]
    global_batch = global_batch_size(rows.shape[0], global_batch)
    gram = rows.T @ rows  # (K, K)
    if scope == "global":
        gram = distributed.all_reduce_sum_with_grad(gram)
    identity = torch.eye(n_bits, device=rows.device, dtype=gram.dtype)
    matrix = identity + (n_bits / (global_batch * eps)) * gram
    chol, info = torch.linalg.cholesky_ex(matrix)
    half_logdet = torch.log(torch.diagonal(chol)).sum()  # 0.5 logdet = sum log diag(L)
    # A failed factorisation (inf/NaN logits) becomes NaN, which the training loop reports
    # with its step; testing `info` here would cost a host-device sync every step.
    return torch.where(info == 0, half_logdet, torch.full_like(half_logdet, float("nan")))


def coding_rate_gamma(n_bits: int, global_batch: int) -> float:
    """SimDINO's scaling gamma = (K + N) / (K N) of the coding rate in the total loss."""
    return (n_bits + global_batch) / (n_bits * global_batch)


def mean_coding_rate(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor],
                     eps: float, *, rate_input: str = "student", scope: str = "global",
                     global_batch: int | None = None) -> Tensor:
    """Coding rate averaged over the global views g = 0 .. G-1 (G = len(teacher_logits)).

    rate_input "student": the rate of the student's normalised outputs on view g (BITS, and
    SimDINO's `--expa_type 0`). "student_teacher_mean": the rate of (s_g/|s_g| + t_g/|t_g|) / 2,
    the mean of the student's and the (detached) teacher's normalised outputs on the same view,
    not renormalised (SimDINO's default `--expa_type 1`, its `calc_expansion((s + t) / 2)`).
    scope and global_batch: as in `coding_rate`.
    """
    if rate_input not in CODING_RATE_INPUTS:
        raise ValueError(f"rate_input must be one of {CODING_RATE_INPUTS}, got {rate_input!r}.")
    rates = []
    for g, teacher in enumerate(teacher_logits):
        with _autocast_off(teacher):
            rows = F.normalize(student_logits[g].float(), dim=1)  # (n, K)
            if rate_input == "student_teacher_mean":
                rows = (rows + F.normalize(teacher.detach().float(), dim=1)) / 2
            rates.append(_rate_of_rows(rows, eps, scope, global_batch))
    return torch.stack(rates).mean()


def weighted_coding_rate(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor],
                         *, coding_rate_weight: float, eps: float, coding_rate_input: str,
                         coding_rate_scope: str, global_batch: int | None
                         ) -> tuple[Tensor, Tensor]:
    """The coding-rate term of BITS (Eq. 10) and SimDINO: (beta * gamma * rate, rate).

    rate is `mean_coding_rate` on the global views; gamma = (K + N) / (K N)
    (`coding_rate_gamma`) uses the global N (`global_batch`; default: rows x world size).
    """
    global_batch = global_batch_size(teacher_logits[0].shape[0], global_batch)
    rate = mean_coding_rate(student_logits, teacher_logits, eps, rate_input=coding_rate_input,
                            scope=coding_rate_scope, global_batch=global_batch)
    n_bits = teacher_logits[0].shape[1]
    return coding_rate_weight * coding_rate_gamma(n_bits, global_batch) * rate, rate


def one_direction_coding_rate(n_bits: int, eps: float) -> float:
    """The coding rate of a batch whose logits all point one way: 0.5 log(1 + K / eps).

    Every row of Zn is the same unit vector, so Zn^T Zn = N u u^T has one eigenvalue N and the
    rate of `coding_rate` (paper Eq. 9) is 0.5 log(1 + K/(N eps) N): the collapsed floor.
    """
    return 0.5 * math.log(1 + n_bits / eps)
