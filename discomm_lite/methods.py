"""One record per method: everything the engine, the model, the suite and the Config ask of it.

solo-learn's one place per method (`solo/methods/__init__.py`), as frozen records rather than a
class hierarchy. A `Method` holds its head factory, its loss, the running state it keeps between
steps (DINO's center), a hook between the gradient clipping and the optimizer step (DINO's frozen
prototypes), whether its head emits binary codes, its coding-rate defaults and its health check.
`register` adds a method (a BITS variant, a fourth baseline) without touching any other module.

This module imports nothing heavy: the functions of the records import the heads and losses when
they are called, so that the Config, which reads the names and defaults here, stays free of torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from discomm_lite.choices import CODING_RATE_INPUTS

if TYPE_CHECKING:  # annotations only: config imports this module
    import torch
    from torch import Tensor, nn

    from discomm_lite.config import Config


@dataclass(frozen=True)
class Method:
    """What the rest of the library asks of one self-supervised method.

    Attributes:
        name: the value of `Config.method`.
        make_head: (config, D) -> the head on the backbone's (N, D) features (a factory).
        loss: (config, student_logits, teacher_logits, *, center, teacher_temp) -> (loss, parts),
            `parts` detached scalars for logging; student_logits are V tensors (N, K), the first
            G global, teacher_logits the G global ones (see `losses`).
        coding_rate_weight: beta when `Config.coding_rate_weight` is None.
        coding_rate_input: the coding rate's features when `Config.coding_rate_input` is None.
        emits_codes: the head's outputs are bit logits, so the suite measures the codes
            `logit > 0`.
        head_resets: head resets are part of the method; asking them of another warns.
        make_center: (config, device) -> a running (1, P) tensor the method keeps between steps
            and in checkpoints (DINO's center); None for a method that keeps none.
        update_center: (center, teacher_logits, config) -> the center after a step.
        before_optimizer_step: (student, epoch, config) -> None, called after the gradients are
            clipped and before the optimizer steps (DINO cancels its prototypes' gradients).
        health_check: (train record, config) -> a warning message when the representation
            collapses, else None.
        fixed_fields: (Config field, required value, reason) triples the Config enforces.
    """

    name: str
    make_head: Callable[[Config, int], nn.Module]
    loss: Callable[..., tuple[Tensor, dict]]
    coding_rate_weight: float
    coding_rate_input: str
    emits_codes: bool
    head_resets: bool = False
    make_center: Callable[[Config, torch.device], Tensor] | None = None
    update_center: Callable[[Tensor, Sequence[Tensor], Config], Tensor] | None = None
    before_optimizer_step: Callable[[nn.Module, int, Config], None] | None = None
    health_check: Callable[[dict, Config], str | None] | None = None
    fixed_fields: tuple[tuple[str, Any, str], ...] = ()


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` to the registry under its name; refuse a name already taken."""
    if method.name in REGISTRY:
        raise ValueError(f"A method named {method.name!r} is already registered.")
    if method.coding_rate_input not in CODING_RATE_INPUTS:
        raise ValueError(f"Method {method.name!r}: coding_rate_input must be one of "
                         f"{', '.join(CODING_RATE_INPUTS)}, got {method.coding_rate_input!r}.")
    if (method.make_center is None) != (method.update_center is None):
        raise ValueError(f"Method {method.name!r}: make_center and update_center go together.")
    REGISTRY[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    """The registered method names, in registration order."""
    return tuple(REGISTRY)


def get_method(name: str) -> Method:
    """The record of method `name`."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown method {name!r}: the methods are {', '.join(REGISTRY)}.")
    return REGISTRY[name]


# ---- heads -------------------------------------------------------------------------------------
def projection_head(config: Config, in_dim: int) -> nn.Module:
    """DINO's 3-layer MLP to `n_bits` outputs: the bit logits of BITS, SimDINO's features."""
    from discomm_lite.heads import ProjectionHead

    return ProjectionHead(in_dim, config.n_bits, config.head_hidden_dim, norm=config.head_norm)


def _dino_head(config: Config, in_dim: int) -> nn.Module:
    from discomm_lite.heads import DINOHead

    return DINOHead(in_dim, config.n_prototypes, config.head_hidden_dim,
                    config.head_bottleneck_dim)


# ---- losses: the config's options into the pure losses ------------------------------------------
def coding_rate_options(config: Config) -> dict:
    """The coding-rate keyword arguments of `losses.bits_loss` and `losses.simdino_loss`."""
    # The global batch is the config's: no all-reduce (and no host sync) to count it.
    return dict(coding_rate_weight=config.beta, eps=config.eps,
                coding_rate_input=config.rate_input, coding_rate_scope=config.coding_rate_scope,
                global_batch=config.batch_size)


def _bits_loss(config: Config, student_logits: Sequence[Tensor],
               teacher_logits: Sequence[Tensor], *, center: Tensor | None,
               teacher_temp: float) -> tuple[Tensor, dict]:
    from discomm_lite.losses import bits_loss

    return bits_loss(student_logits, teacher_logits, agreement=config.agreement,
                     targets=config.targets, temperature=config.target_temperature,
                     **coding_rate_options(config))


def _simdino_loss(config: Config, student_logits: Sequence[Tensor],
                  teacher_logits: Sequence[Tensor], *, center: Tensor | None,
                  teacher_temp: float) -> tuple[Tensor, dict]:
    from discomm_lite.losses import simdino_loss

    return simdino_loss(student_logits, teacher_logits, **coding_rate_options(config))


def _dino_loss(config: Config, student_logits: Sequence[Tensor],
               teacher_logits: Sequence[Tensor], *, center: Tensor | None,
               teacher_temp: float) -> tuple[Tensor, dict]:
    from discomm_lite.losses import dino_loss

    return dino_loss(student_logits, teacher_logits, center=center, teacher_temp=teacher_temp,
                     student_temp=config.student_temp)


# ---- DINO's center and frozen prototypes --------------------------------------------------------
def _dino_center(config: Config, device: torch.device) -> Tensor:
    import torch

    return torch.zeros(1, config.n_prototypes, device=device)


def _dino_update_center(center: Tensor, teacher_logits: Sequence[Tensor],
                        config: Config) -> Tensor:
    from discomm_lite.losses import update_center

    return update_center(center, teacher_logits, config.center_momentum)


def _freeze_prototypes(student: nn.Module, epoch: int, config: Config) -> None:
    # DINO's cancel_gradients_last_layer (main_dino.py): no prototype update in the first epochs.
    if epoch < config.freeze_last_layer_epochs:
        student.head.cancel_last_layer_gradients()


# ---- BITS's channel monitor ---------------------------------------------------------------------
def one_direction_coding_rate(n_bits: int, eps: float) -> float:
    """The coding rate of a batch whose logits all point one way: 0.5 log(1 + K / eps).

    Every row of Zn is the same unit vector, so Zn^T Zn = N u u^T has one eigenvalue N and the
    rate of `losses.coding_rate` (paper Eq. 9) is 0.5 log(1 + K/(N eps) N): the collapsed floor.
    """
    return 0.5 * math.log(1 + n_bits / eps)


def collapse_message(record: dict, n_bits: int, eps: float, max_constant: float) -> str | None:
    """A warning when the channel collapses, with the measured numbers; None when healthy.

    Two signs: most teacher bits constant over the batch (`constant_bits` >= max_constant), or a
    coding rate no higher than that of logits all pointing one way, 0.5 log(1 + K / eps) (every
    row equal after normalisation; paper Eq. 9).
    """
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


# ---- the three methods of the paper -------------------------------------------------------------
register(Method(
    # Paper Eq. 10: cross-view BCE to the teacher's bits minus beta x gamma x coding rate.
    name="bits", make_head=projection_head, loss=_bits_loss,
    coding_rate_weight=0.1,  # the paper's beta
    coding_rate_input="student",  # the paper's Eq. 9
    emits_codes=True, head_resets=True, health_check=_channel_collapse,
))
register(Method(
    # RobinWu218/SimDINO simdino/main_dino.py: squared distance minus the coding rate.
    name="simdino", make_head=projection_head, loss=_simdino_loss,
    coding_rate_weight=1.0,  # its --coeff 1
    coding_rate_input="student_teacher_mean",  # its default --expa_type 1
    emits_codes=True,
))
register(Method(
    # facebookresearch/dino main_dino.py: centred, sharpened cross-entropy over prototypes.
    name="dino", make_head=_dino_head, loss=_dino_loss,
    coding_rate_weight=0.0, coding_rate_input="student",  # DINO has no coding rate
    emits_codes=False,  # prototype scores, not codes
    make_center=_dino_center, update_center=_dino_update_center,
    before_optimizer_step=_freeze_prototypes,
    fixed_fields=(("agreement", "bce", "DINO has its own loss"),),
))
