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
from discomm_lite.choices import CODING_RATE_INPUTS, CODING_RATE_SCOPES


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
    """Ablation: 1 - cosine between student logits and the +/-1 message (paper Sec. 5.3, Tab. 3).

    The message is 2 * bits - 1, so hard targets are +/-1 and soft ones lie in (-1, 1). Views
    as in `bce_agreement`; the paper measures 36.34 mAP against BCE's 43.44.
    """
    _check_views(student_logits, teacher_logits)
    signs = [2 * teacher_targets(t, targets, temperature) - 1 for t in teacher_logits]
    return _cross_view_mean(
        student_logits, signs,
        lambda s, m: 1 - F.cosine_similarity(s.float(), m.float(), dim=-1).mean(),
    )


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
    agreement = _cross_view_mean(student_bits, teacher_bits, lambda s, t: (s == t).float().mean())
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
    _check_views(student_logits, teacher_logits)
    align = _cross_view_mean(
        student_logits, [t.detach() for t in teacher_logits],
        lambda s, t: 1 - F.cosine_similarity(s.float(), t.float(), dim=-1).mean(),
    )
    penalty, rate = weighted_coding_rate(
        student_logits, teacher_logits, coding_rate_weight=coding_rate_weight, eps=eps,
        coding_rate_input=coding_rate_input, coding_rate_scope=coding_rate_scope,
        global_batch=global_batch)
    loss = align - penalty
    return loss, {"alignment": align.detach(), "coding_rate": rate.detach()}


def dino_loss(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], *,
              center: Tensor, teacher_temp: float, student_temp: float = 0.1
              ) -> tuple[Tensor, dict]:
    """DINO: cross-entropy between centred, sharpened teacher and student softmaxes.

    facebookresearch/dino main_dino.py, DINOLoss.forward, over the view pairs v != g.

    Args:
        student_logits: V tensors (N, P) of prototype scores, the first G global.
        teacher_logits: G tensors (N, P) of the teacher on the global views.
        center: (1, P) running mean of the teacher's outputs (see `update_center`).
        teacher_temp, student_temp: the softmax temperatures.

    Returns:
        (loss, parts): parts "cross_entropy" and "prototypes_used" (exp of the entropy of the
        batch-mean teacher distribution), detached.
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
    """DINO's center: EMA of the batch-mean teacher output, averaged over all processes.

    facebookresearch/dino main_dino.py, DINOLoss.update_center. Every process holds the same
    number of rows, so the count is known without a device sync.

    Args:
        center: (1, P) the center before the step.
        teacher_logits: G tensors (N, P) of this step.
        momentum: the center's EMA momentum.

    Returns:
        (1, P) the new center.
    """
    batch_sum = torch.cat(teacher_logits).float().sum(0, keepdim=True)  # (1, P)
    batch_sum = distributed.all_reduce_sum(batch_sum)
    count = global_batch_size(sum(t.shape[0] for t in teacher_logits))
    return center * momentum + (batch_sum / count) * (1 - momentum)
