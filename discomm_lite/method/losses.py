"""Pure loss functions of BITS and SimDINO (DINO's are in `dino`, the coding rate in `coding_rate`).

Every loss takes lists of per-view tensors: `student_logits[v]` is (N, K) for view v, the first G
views being the global ones; `teacher_logits[g]` is (N, K) for global view g. Losses return
`(loss, parts)` where `parts` holds detached scalars for logging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from discomm_lite.method.coding_rate import weighted_coding_rate


def check_views(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor]) -> None:
    """Raise ValueError unless the views are (N, K) tensors of one shape, 1+ teacher and 2+ student
    views, the teacher's no more than the student's (every loss's first check)."""
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
    """The teacher's message: hard bits `logit > 0` (paper Eq. 7), or soft `sigmoid(logit / T)`.

    Soft targets are the ablation of paper Sec. 5.3. No gradient flows to the teacher: the result
    is always detached.

    Args:
        teacher_logits: (N, K) logits of one global view.
        targets: "hard" or "soft".
        temperature: T of the soft targets.

    Returns:
        (N, K) targets in {0, 1} (hard) or (0, 1) (soft), detached.
    """
    teacher_logits = teacher_logits.detach()
    if targets == "hard":
        return (teacher_logits > 0).to(teacher_logits.dtype)
    if targets == "soft":
        return torch.sigmoid(teacher_logits / temperature)
    raise ValueError(f"targets must be 'hard' or 'soft', got {targets!r}.")


def cross_view_mean(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor],
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
    check_views(student_logits, teacher_logits)
    messages = [teacher_targets(t, targets, temperature) for t in teacher_logits]
    return cross_view_mean(
        student_logits, messages,
        lambda s, m: F.binary_cross_entropy_with_logits(s.float(), m.float()),
    )


def cosine_agreement(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
                     targets: str = "hard", temperature: float = 0.1) -> Tensor:
    """Ablation: 1 - cosine between student logits and the +/-1 message (paper Sec. 5.3, Tab. 3).

    The message is 2 * bits - 1, so hard targets are +/-1 and soft ones lie in (-1, 1). Views
    as in `bce_agreement`; the paper measures 36.34 mAP against BCE's 43.44.
    """
    check_views(student_logits, teacher_logits)
    signs = [2 * teacher_targets(t, targets, temperature) - 1 for t in teacher_logits]
    return cross_view_mean(
        student_logits, signs,
        lambda s, m: 1 - F.cosine_similarity(s.float(), m.float(), dim=-1).mean(),
    )


def bits_loss(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
              coding_rate_weight: float = 0.1, eps: float = 0.05, agreement: str = "bce",
              targets: str = "hard", temperature: float = 0.1,
              coding_rate_input: str = "student", coding_rate_scope: str = "global",
              global_batch: int | None = None) -> tuple[Tensor, dict]:
    """BITS objective (Eq. 10): agreement - beta * gamma * coding rate of the student's globals.

    The coding-rate options and global_batch (the batch over all processes; default: rows x world
    size) are those of `weighted_coding_rate`.

    Returns (loss, parts) with detached parts: agreement, coding_rate, bit_agreement (fraction of
    student bits equal to the teacher's across view pairs), constant_bits (fraction of teacher
    bits constant over the batch), bit_entropy (mean marginal entropy of the teacher's bits).
    """
    agree_fn = {"bce": bce_agreement, "cosine": cosine_agreement}.get(agreement)
    if agree_fn is None:
        raise ValueError(f"agreement must be 'bce' or 'cosine', got {agreement!r}.")
    agree = agree_fn(student_logits, teacher_logits, targets=targets, temperature=temperature)
    penalty, rate = weighted_coding_rate(
        student_logits, teacher_logits, coding_rate_weight=coding_rate_weight, eps=eps,
        coding_rate_input=coding_rate_input, coding_rate_scope=coding_rate_scope,
        global_batch=global_batch)
    loss = agree - penalty
    parts = {"agreement": agree.detach(), "coding_rate": rate.detach(),
             **channel_statistics(student_logits, teacher_logits)}
    return loss, parts


@torch.no_grad()
def channel_statistics(student_logits: Sequence[Tensor],
                       teacher_logits: Sequence[Tensor]) -> dict[str, Tensor]:
    """Health of the binary channel, as device scalars (no host sync); views as in `bits_loss`.

    bit_agreement: fraction of student bits equal to the teacher's message over pairs v != g;
    constant_bits: fraction of the teacher's bits constant over the batch (a collapsing channel);
    bit_entropy: mean marginal entropy (bits) of the teacher's bits over the batch;
    logit_std: standard deviation of the student's logits (their scale).
    """
    student_bits = [s > 0 for s in student_logits]
    teacher_bits = [t > 0 for t in teacher_logits]
    agreement = cross_view_mean(student_bits, teacher_bits, lambda s, t: (s == t).float().mean())
    usage = torch.cat(teacher_bits).float().mean(0)  # (K,) P(bit = 1) over the batch
    constant = ((usage == 0) | (usage == 1)).float().mean()
    p = usage.clamp(1e-7, 1 - 1e-7)
    entropy = (-(p * p.log2() + (1 - p) * (1 - p).log2())).mean()
    logit_std = torch.cat([s.float() for s in student_logits]).std()
    return {"bit_agreement": agreement, "constant_bits": constant, "bit_entropy": entropy,
            "logit_std": logit_std}


def simdino_loss(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
                 coding_rate_weight: float = 1.0, eps: float = 0.05,
                 coding_rate_input: str = "student_teacher_mean",
                 coding_rate_scope: str = "global", global_batch: int | None = None
                 ) -> tuple[Tensor, dict]:
    """SimDINO: squared distance of L2-normalised outputs minus gamma-scaled coding rate.

    Alignment 0.5 ||s/|s| - t/|t| ||^2 = 1 - cos(s, t) over pairs v != g, so with weight 1 this
    is SimDINO's MCRLoss `- comp_loss - expa_loss` (its defaults `--coeff 1`) plus the constant 1.
    The coding rate is `mean_coding_rate` on the global views, by default on the mean of the
    student's and the teacher's normalised outputs (SimDINO's default `--expa_type 1`).
    """
    check_views(student_logits, teacher_logits)
    align = cross_view_mean(
        student_logits, [t.detach() for t in teacher_logits],
        lambda s, t: 1 - F.cosine_similarity(s.float(), t.float(), dim=-1).mean(),
    )
    penalty, rate = weighted_coding_rate(
        student_logits, teacher_logits, coding_rate_weight=coding_rate_weight, eps=eps,
        coding_rate_input=coding_rate_input, coding_rate_scope=coding_rate_scope,
        global_batch=global_batch)
    loss = align - penalty
    return loss, {"alignment": align.detach(), "coding_rate": rate.detach()}
