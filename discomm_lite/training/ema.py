"""Exponential moving average of the student into the teacher."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, over parameters only.

    The teacher update of DINO's train_one_epoch (facebookresearch/dino main_dino.py), as one
    `_foreach_lerp_` (lightly's update_momentum, fused).

    Buffers (BatchNorm running statistics) are the teacher's own: it runs in train mode on its
    views, as in DINO, so they track its own activations. momentum 1 keeps the teacher, 0 copies.
    """
    teacher_params = list(teacher.parameters())
    student_params = [p.detach() for p in student.parameters()]
    if len(teacher_params) != len(student_params):
        raise ValueError("Teacher and student must have the same parameters.")
    # lerp: teacher + (1 - momentum) (student - teacher), one pass over the weights.
    torch._foreach_lerp_(teacher_params, student_params, 1 - momentum)
