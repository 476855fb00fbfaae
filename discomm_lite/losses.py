"""Pure loss functions of BITS and its two baselines (DINO, SimDINO).

Every loss takes lists of per-view tensors: `student_logits[v]` is (N, K) for view v, the first G
views being the global ones; `teacher_logits[g]` is (N, K) for global view g. Anything that changes
during training (temperatures, the DINO center) is passed in per call. Losses return
`(loss, parts)` where `parts` holds detached scalars for logging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from discomm_lite import distributed


def _check_views(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor]) -> None:
    if len(teacher_logits) < 1 or len(student_logits) < 2:
        raise ValueError(
            f"Need at least 1 teacher view and 2 student views, got {len(teacher_logits)} and "
            f"{len(student_logits)}: pass one (N, K) tensor per view."
        )
    if len(teacher_logits) > len(student_logits):
        raise ValueError(
            f"The teacher sees only the global views, which the student sees too: got "
            f"{len(teacher_logits)} teacher views for {len(student_logits)} student views."
        )
    shape = teacher_logits[0].shape
    for name, views in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        for v, x in enumerate(views):
            if x.dim() != 2 or x.shape[0] != shape[0] or x.shape[1] != shape[1]:
                raise ValueError(
                    f"{name}[{v}] has shape {tuple(x.shape)}; every view must be (N, K) = "
                    f"{tuple(shape)} like teacher_logits[0]."
                )


def teacher_targets(teacher_logits: Tensor, targets: str = "hard",
                    temperature: float = 0.1) -> Tensor:
    """The teacher's message: hard bits `logit > 0` (paper), or soft `sigmoid(logit / T)`.

    No gradient flows to the teacher: the result is always detached.
    """
    teacher_logits = teacher_logits.detach()
    if targets == "hard":
        return (teacher_logits > 0).to(teacher_logits.dtype)
    if targets == "soft":
        return torch.sigmoid(teacher_logits / temperature)
    raise ValueError(f"targets must be 'hard' or 'soft', got {targets!r}.")


def _cross_view_mean(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor],
                     pair_loss) -> Tensor:
    """Mean of `pair_loss(student_logits[v], teacher_logits[g])` over all pairs v != g."""
    total, n_pairs = 0.0, 0
    for g, teacher in enumerate(teacher_logits):
        for v, student in enumerate(student_logits):
            if v == g:  # a view never predicts its own message
                continue
            total = total + pair_loss(student, teacher)
            n_pairs += 1
    return total / n_pairs


def bce_agreement(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
                  targets: str = "hard", temperature: float = 0.1) -> Tensor:
    """Cross-view element-wise BCE between student logits and the teacher's bits (Eq. 8).

    Mean over view pairs (v, g), v != g, of BCE(student_logits[v], bits(teacher_logits[g])),
    each averaged over batch and bits. With V = G = 2 this is the paper's symmetric Eq. 8 up to
    the constant 1/(2K).
    """
    _check_views(student_logits, teacher_logits)
    messages = [teacher_targets(t, targets, temperature) for t in teacher_logits]
    return _cross_view_mean(
        student_logits, messages,
        lambda s, m: F.binary_cross_entropy_with_logits(s.float(), m.float()),
    )


def cosine_agreement(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
                     targets: str = "hard", temperature: float = 0.1) -> Tensor:
    """Ablation: 1 - cosine between student logits and the +/-1 message (paper: 36.34 mAP).

    The message is 2 * bits - 1, so hard targets are +/-1 and soft ones lie in (-1, 1).
    """
    _check_views(student_logits, teacher_logits)
    signs = [2 * teacher_targets(t, targets, temperature) - 1 for t in teacher_logits]
    return _cross_view_mean(
        student_logits, signs,
        lambda s, m: 1 - F.cosine_similarity(s.float(), m.float(), dim=-1).mean(),
    )


def coding_rate(z: Tensor, eps: float = 0.05) -> Tensor:
    """Coding rate of L2-normalised rows: 0.5 logdet(I_K + K / (N eps) Zn^T Zn) (Eq. 9).

    z: (n, K) on this process; under torch.distributed the K x K Gram matrix is summed over all
    processes (with gradient) and N is the global batch, so 1 or 8 processes give the same value
    for the same global batch. eps plays the role of eps^2 in the paper (SimDINO/CroVCA code).
    Computed in float32 through a Cholesky factor; a failed factorisation raises.
    """
    if z.dim() != 2:
        raise ValueError(f"coding_rate expects (N, K) logits, got shape {tuple(z.shape)}.")
    n_bits = z.shape[1]
    zn = F.normalize(z.float(), dim=1)
    gram = distributed.all_reduce_sum_with_grad(zn.T @ zn)  # (K, K), summed over processes
    n_global = distributed.all_reduce_sum_int(z.shape[0])
    identity = torch.eye(n_bits, device=z.device, dtype=gram.dtype)
    matrix = identity + (n_bits / (n_global * eps)) * gram
    chol, info = torch.linalg.cholesky_ex(matrix)
    half_logdet = torch.log(torch.diagonal(chol)).sum()  # 0.5 logdet = sum log diag(L)
    # A failed factorisation (inf/NaN logits) becomes NaN, which the training loop reports
    # with its step; testing `info` here would cost a host-device sync every step.
    return torch.where(info == 0, half_logdet, torch.full_like(half_logdet, float("nan")))


def coding_rate_gamma(n_bits: int, n_global: int) -> float:
    """SimDINO's scaling gamma = (K + N) / (K N) of the coding rate in the total loss."""
    return (n_bits + n_global) / (n_bits * n_global)


def mean_coding_rate(student_logits: Sequence[Tensor], n_global_views: int,
                     eps: float) -> Tensor:
    """Coding rate averaged over the student's global views."""
    rates = [coding_rate(z, eps) for z in student_logits[:n_global_views]]
    return torch.stack(rates).mean()


def bits_loss(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
              coding_rate_weight: float = 0.1, eps: float = 0.05, agreement: str = "bce",
              targets: str = "hard", temperature: float = 0.1) -> tuple[Tensor, dict]:
    """BITS objective (Eq. 10): agreement - beta * gamma * coding rate of the student's globals.

    Returns (loss, parts) with detached parts: agreement, coding_rate, bit_agreement (fraction of
    student bits equal to the teacher's across view pairs), constant_bits (fraction of teacher
    bits constant over the batch), bit_entropy (mean marginal entropy of the teacher's bits).
    """
    agree_fn = {"bce": bce_agreement, "cosine": cosine_agreement}.get(agreement)
    if agree_fn is None:
        raise ValueError(f"agreement must be 'bce' or 'cosine', got {agreement!r}.")
    agree = agree_fn(student_logits, teacher_logits, targets=targets, temperature=temperature)
    n_global_views = len(teacher_logits)
    rate = mean_coding_rate(student_logits, n_global_views, eps)
    n_bits = teacher_logits[0].shape[1]
    n_global = distributed.all_reduce_sum_int(teacher_logits[0].shape[0])
    loss = agree - coding_rate_weight * coding_rate_gamma(n_bits, n_global) * rate
    parts = {"agreement": agree.detach(), "coding_rate": rate.detach(),
             **channel_statistics(student_logits, teacher_logits)}
    return loss, parts


@torch.no_grad()
def channel_statistics(student_logits: Sequence[Tensor],
                       teacher_logits: Sequence[Tensor]) -> dict[str, Tensor]:
    """Health of the binary channel, as device scalars (no host sync).

    bit_agreement: fraction of student bits equal to the teacher's message over pairs v != g;
    constant_bits: fraction of the teacher's bits constant over the batch (a collapsing channel);
    bit_entropy: mean marginal entropy (bits) of the teacher's bits over the batch;
    logit_std: standard deviation of the student's logits (their scale).
    """
    student_bits = [s > 0 for s in student_logits]
    teacher_bits = [t > 0 for t in teacher_logits]
    agreement = _cross_view_mean(student_bits, teacher_bits, lambda s, t: (s == t).float().mean())
    usage = torch.cat(teacher_bits).float().mean(0)  # (K,) P(bit = 1) over the batch
    constant = ((usage == 0) | (usage == 1)).float().mean()
    p = usage.clamp(1e-7, 1 - 1e-7)
    entropy = (-(p * p.log2() + (1 - p) * (1 - p).log2())).mean()
    logit_std = torch.cat([s.float() for s in student_logits]).std()
    return {"bit_agreement": agreement, "constant_bits": constant, "bit_entropy": entropy,
            "logit_std": logit_std}


def simdino_loss(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
                 coding_rate_weight: float = 1.0, eps: float = 0.05) -> tuple[Tensor, dict]:
    """SimDINO: squared distance of L2-normalised outputs minus gamma-scaled coding rate.

    Alignment 0.5 ||s/|s| - t/|t| ||^2 = 1 - cos(s, t) over pairs v != g; the coding rate is the
    same term as BITS's, on the student's global views.
    """
    _check_views(student_logits, teacher_logits)
    align = _cross_view_mean(
        student_logits, [t.detach() for t in teacher_logits],
        lambda s, t: 1 - F.cosine_similarity(s.float(), t.float(), dim=-1).mean(),
    )
    rate = mean_coding_rate(student_logits, len(teacher_logits), eps)
    n_dims = teacher_logits[0].shape[1]
    n_global = distributed.all_reduce_sum_int(teacher_logits[0].shape[0])
    loss = align - coding_rate_weight * coding_rate_gamma(n_dims, n_global) * rate
    return loss, {"alignment": align.detach(), "coding_rate": rate.detach()}


def dino_loss(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
              center: Tensor, teacher_temp: float, student_temp: float = 0.1
              ) -> tuple[Tensor, dict]:
    """DINO: cross-entropy between centred, sharpened teacher and student softmaxes.

    `center` (1, P) is the running mean of the teacher's outputs (see `update_center`).
    """
    _check_views(student_logits, teacher_logits)
    probs = [F.softmax((t.detach().float() - center) / teacher_temp, dim=-1)
             for t in teacher_logits]
    loss = _cross_view_mean(
        student_logits, probs,
        lambda s, p: -(p * F.log_softmax(s.float() / student_temp, dim=-1)).sum(-1).mean(),
    )
    mean_prob = torch.cat(probs).mean(0)
    # exp(entropy) of the batch-mean teacher distribution: prototypes in use (collapse monitor).
    used = torch.exp(-(mean_prob * mean_prob.clamp_min(1e-12).log()).sum())
    return loss, {"cross_entropy": loss.detach(), "prototypes_used": used.detach()}


@torch.no_grad()
def update_center(center: Tensor, teacher_logits: Sequence[Tensor], momentum: float) -> Tensor:
    """DINO's center: EMA of the batch-mean teacher output, averaged over all processes."""
    batch_sum = torch.cat(teacher_logits).float().sum(0, keepdim=True)  # (1, P)
    batch_sum = distributed.all_reduce_sum(batch_sum)
    count = distributed.all_reduce_sum_int(sum(t.shape[0] for t in teacher_logits))
    return center * momentum + (batch_sum / count) * (1 - momentum)
