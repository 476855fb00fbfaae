"""DINO (Caron et al. 2021, facebookresearch/dino): a centred, sharpened cross-entropy between the
teacher's and the student's distributions over prototypes. The paper's first baseline.

Registered as "dino". Everything DINO-only is here: its head factory (`heads.DINOHead`), its loss,
its running state (the center: an EMA of the teacher's mean output, saved in checkpoints under
"method_state"), its teacher-temperature schedule, the prototypes it freezes for its first epochs,
and the Config fields only it reads (`DINO_OPTIONS`). Torch is imported inside the functions, so
that registering DINO costs the Config nothing (see `registry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from discomm_lite.method.registry import Method, MethodState, register

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from discomm_lite.config import Config

DINO_OPTIONS = ("n_prototypes", "head_bottleneck_dim", "teacher_temp", "teacher_temp_warmup",
                "teacher_temp_warmup_epochs", "student_temp", "center_momentum",
                "freeze_last_layer_epochs")


# ---- the maths -----------------------------------------------------------------------------------
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
    import torch
    import torch.nn.functional as F

    from discomm_lite.method.losses import check_views, cross_view_mean

    check_views(student_logits, teacher_logits)
    probs = [F.softmax((t.detach().float() - center) / teacher_temp, dim=-1)
             for t in teacher_logits]
    loss = cross_view_mean(
        student_logits, probs,
        lambda s, p: -(p * F.log_softmax(s.float() / student_temp, dim=-1)).sum(-1).mean(),
    )
    mean_prob = torch.cat(probs).mean(0)
    # exp(entropy) of the batch-mean teacher distribution: prototypes in use (collapse monitor).
    used = torch.exp(-(mean_prob * mean_prob.clamp_min(1e-12).log()).sum())
    return loss, {"cross_entropy": loss.detach(), "prototypes_used": used.detach()}


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
    import torch

    from discomm_lite import distributed
    from discomm_lite.method.coding_rate import global_batch_size

    with torch.no_grad():
        batch_sum = torch.cat(teacher_logits).float().sum(0, keepdim=True)  # (1, P)
        batch_sum = distributed.all_reduce_sum(batch_sum)
        count = global_batch_size(sum(t.shape[0] for t in teacher_logits))
        return center * momentum + (batch_sum / count) * (1 - momentum)


def teacher_temperature(step: int, ramp_steps: int, start: float, end: float) -> float:
    """DINO's teacher temperature: linear from `start` to `end` over `ramp_steps`, then `end`."""
    if step >= ramp_steps:
        return end
    return start + (end - start) * step / ramp_steps


# ---- the record's functions ----------------------------------------------------------------------
def _head(config: Config, in_dim: int) -> nn.Module:
    from discomm_lite.method.heads import DINOHead

    return DINOHead(in_dim, config.n_prototypes, config.head_hidden_dim,
                    config.head_bottleneck_dim)


def _loss(config: Config, student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor],
          state: MethodState, step: int, steps_per_epoch: int) -> tuple[Tensor, dict]:
    temperature = teacher_temperature(step, config.teacher_temp_warmup_epochs * steps_per_epoch,
                                      config.teacher_temp_warmup, config.teacher_temp)
    return dino_loss(student_logits, teacher_logits, center=state["center"],
                     teacher_temp=temperature, student_temp=config.student_temp)


def _initial_state(config: Config, device: torch.device) -> MethodState:
    import torch

    return {"center": torch.zeros(1, config.n_prototypes, device=device)}


def _next_state(state: MethodState, teacher_logits: Sequence[Tensor],
                config: Config) -> MethodState:
    return {"center": update_center(state["center"], teacher_logits, config.center_momentum)}


def _legacy_state(payload: dict) -> MethodState:
    # Checkpoints written before method states kept DINO's center under "center".
    return {} if payload.get("center") is None else {"center": payload["center"]}


def _freeze_prototypes(student: nn.Module, epoch: int, config: Config) -> None:
    # DINO's cancel_gradients_last_layer (main_dino.py): no prototype update in the first epochs.
    if epoch < config.freeze_last_layer_epochs:
        student.head.cancel_last_layer_gradients()


DINO = register(Method(
    # facebookresearch/dino main_dino.py: centred, sharpened cross-entropy over prototypes.
    name="dino", make_head=_head, loss=_loss,
    coding_rate_weight=None, coding_rate_input="student",  # DINO has no coding rate
    emits_codes=False,  # prototype scores, not codes
    make_state=_initial_state, update_state=_next_state, legacy_state=_legacy_state,
    before_optimizer_step=_freeze_prototypes, options=DINO_OPTIONS,
))
