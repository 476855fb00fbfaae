"""BITS, the paper's method: the teacher's K-bit message, predicted by the student from every
other view, with a coding rate that keeps the channel in use (paper Eq. 10).

Registered as "bits". The maths is in `losses` (the agreement terms, the channel's statistics)
and `coding_rate` (Eq. 9); this module turns the Config's options into their arguments and
watches the channel for collapse. It imports nothing heavy (see `registry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from discomm_lite.method.registry import Method, MethodState, register

if TYPE_CHECKING:
    from torch import Tensor, nn

    from discomm_lite.config import Config


def projection_head(config: Config, in_dim: int) -> nn.Module:
    """DINO's 3-layer MLP to `n_bits` outputs: the bit logits of BITS, SimDINO's features."""
    from discomm_lite.method.heads import ProjectionHead

    return ProjectionHead(in_dim, config.n_bits, config.head_hidden_dim, norm=config.head_norm)


def coding_rate_options(config: Config) -> dict:
    """The coding-rate keyword arguments of `losses.bits_loss` and `losses.simdino_loss`."""
    # The global batch is the config's: no all-reduce (and no host sync) to count it.
    return dict(coding_rate_weight=config.beta, eps=config.eps,
                coding_rate_input=config.rate_input, coding_rate_scope=config.coding_rate_scope,
                global_batch=config.batch_size)


def _loss(config: Config, student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor],
          state: MethodState, step: int, steps_per_epoch: int) -> tuple[Tensor, dict]:
    from discomm_lite.method.losses import bits_loss

    return bits_loss(student_logits, teacher_logits, agreement=config.agreement,
                     targets=config.targets, temperature=config.target_temperature,
                     **coding_rate_options(config))


def collapse_message(record: dict, n_bits: int, eps: float, max_constant: float) -> str | None:
    """A warning when the channel collapses, with the measured numbers; None when healthy.

    Two signs: most teacher bits constant over the batch (`constant_bits` >= max_constant), or a
    coding rate no higher than that of logits all pointing one way, 0.5 log(1 + K / eps) (every
    row equal after normalisation; paper Eq. 9).
    """
    from discomm_lite.method.coding_rate import one_direction_coding_rate

    one_direction = one_direction_coding_rate(n_bits, eps)
    constant, rate = record["constant_bits"], record["coding_rate"]
    if constant < max_constant and rate > 1.1 * one_direction:
        return None
    return (f"Channel collapse at step {record['step']}: {constant:.0%} of the teacher's bits are "
            f"constant over the batch, coding rate {rate:.3f} (all-one-direction value "
            f"{one_direction:.3f}), bit entropy {record['bit_entropy']:.3f} bits. Consider a "
            "higher coding_rate_weight or a lower lr.")


def _channel_collapse(record: dict, config: Config) -> str | None:
    return collapse_message(record, config.n_bits, config.eps, config.collapse_warn)


BITS = register(Method(
    # Paper Eq. 10: cross-view BCE to the teacher's bits minus beta x gamma x coding rate.
    name="bits", make_head=projection_head, loss=_loss,
    coding_rate_weight=0.1,  # the paper's beta
    coding_rate_input="student",  # the paper's Eq. 9
    emits_codes=True, head_resets=True, health_check=_channel_collapse,
    options=("agreement", "targets", "target_temperature"),
))
