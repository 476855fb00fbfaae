"""SimDINO (Wu et al. 2025, RobinWu218/SimDINO): DINO's teacher-student pair with a squared
distance between normalised outputs and a coding-rate term instead of DINO's prototypes.

Registered as "simdino". It uses BITS's head (its K outputs are features, not bits) and the same
coding rate; the maths is `losses.simdino_loss`. It imports nothing heavy (see `registry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from discomm_lite.method.bits import coding_rate_options, projection_head
from discomm_lite.method.registry import Method, MethodState, register

if TYPE_CHECKING:
    from torch import Tensor

    from discomm_lite.config import Config


def _loss(config: Config, student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor],
          state: MethodState, step: int, steps_per_epoch: int) -> tuple[Tensor, dict]:
    from discomm_lite.method.losses import simdino_loss

    return simdino_loss(student_logits, teacher_logits, **coding_rate_options(config))


SIMDINO = register(Method(
    # RobinWu218/SimDINO simdino/main_dino.py: squared distance minus the coding rate.
    name="simdino", make_head=projection_head, loss=_loss,
    coding_rate_weight=1.0,  # its --coeff 1
    coding_rate_input="student_teacher_mean",  # its default --expa_type 1
    emits_codes=True,
))
