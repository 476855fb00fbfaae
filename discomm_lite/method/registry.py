"""One record per method: everything the training loop, the model, the suite and the Config ask.

solo-learn's one place per method (`solo/methods/__init__.py`), as frozen records rather than a
class hierarchy. A `Method` holds its head factory, its loss, the running state it keeps
between steps (DINO's, in `dino`) and how that state is updated, a hook between the gradient
clipping and the optimizer step (DINO's frozen prototypes), whether its head emits binary codes,
its coding-rate defaults, the Config fields only it reads, and its health check. A new method is
one module that calls `register` (see `bits`, `simdino`, `dino`, which the package imports, so
that importing any part of `discomm_lite.method` registers the paper's three); the training loop
looks its record up once.

This module imports nothing heavy, nor do the records' modules at import time: their functions
import torch, the heads and the losses when they are called, so that the Config, which reads the
names and defaults here, stays free of torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from discomm_lite.choices import CODING_RATE_INPUTS

if TYPE_CHECKING:  # annotations only: the config imports this module
    import torch
    from torch import Tensor, nn

    from discomm_lite.config import Config

# What a method keeps between steps: named tensors, saved in checkpoints under "method_state".
MethodState = dict[str, "Tensor"]


@dataclass(frozen=True)
class Method:
    """What the rest of the library asks of one self-supervised method.

    Attributes:
        name: the value of `Config.method`.
        make_head: (config, D) -> the head on the backbone's (N, D) features (a factory).
        loss: (config, student_logits, teacher_logits, state, step, steps_per_epoch) ->
            (loss, parts), `parts` detached scalars for logging; student_logits are V tensors
            (N, K), the first G global, teacher_logits the G global ones (see `losses`); `state`
            is the method's running state, `step` the global step (for the method's own
            schedules).
        coding_rate_weight: beta when `Config.coding_rate_weight` is None; None for a method
            without a coding-rate term.
        coding_rate_input: the coding rate's features when `Config.coding_rate_input` is None.
        emits_codes: the head's outputs are bit logits, so the suite measures the codes
            `logit > 0`.
        head_resets: head resets are part of the method; asking them of another warns.
        make_state: (config, device) -> the method's running state at step 0 (None: it keeps
            none; the state is then {}).
        update_state: (state, teacher_logits, config) -> the state after a step.
        legacy_state: (checkpoint payload) -> the state of a checkpoint written before states
            were saved under "method_state" (None when there was nothing to save).
        before_optimizer_step: (student, epoch, config) -> None, called after the gradients are
            clipped and before the optimizer steps (DINO cancels its prototypes' gradients).
        health_check: (train record, config) -> a warning message when the representation
            collapses, else None.
        fixed_fields: (Config field, required value, reason) triples the Config enforces.
        options: the Config fields only this method reads; another method refuses them at a
            value other than their default.
    """

    name: str
    make_head: Callable[[Config, int], nn.Module]
    loss: Callable[..., tuple[Tensor, dict]]
    coding_rate_weight: float | None
    coding_rate_input: str
    emits_codes: bool
    head_resets: bool = False
    make_state: Callable[[Config, torch.device], MethodState] | None = None
    update_state: Callable[[MethodState, Sequence[Tensor], Config], MethodState] | None = None
    legacy_state: Callable[[dict], MethodState] | None = None
    before_optimizer_step: Callable[[nn.Module, int, Config], None] | None = None
    health_check: Callable[[dict, Config], str | None] | None = None
    fixed_fields: tuple[tuple[str, Any, str], ...] = ()
    options: tuple[str, ...] = ()

    def initial_state(self, config: Config, device: torch.device) -> MethodState:
        """The running state of a new run ({} for a method that keeps none)."""
        return {} if self.make_state is None else self.make_state(config, device)

    def next_state(self, state: MethodState, teacher_logits: Sequence[Tensor],
                   config: Config) -> MethodState:
        """The running state after a step with the teacher's outputs `teacher_logits`."""
        return state if self.update_state is None else self.update_state(state, teacher_logits,
                                                                          config)

    def saved_state(self, payload: dict) -> MethodState:
        """The running state a checkpoint's payload holds, whichever version wrote it."""
        if "method_state" in payload:
            return payload["method_state"]
        return {} if self.legacy_state is None else self.legacy_state(payload)


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` to the registry under its name; refuse a name already taken."""
    if method.name in REGISTRY:
        raise ValueError(f"A method named {method.name!r} is already registered.")
    if method.coding_rate_input not in CODING_RATE_INPUTS:
        raise ValueError(f"Method {method.name!r}: coding_rate_input must be one of "
                         f"{', '.join(CODING_RATE_INPUTS)}, got {method.coding_rate_input!r}.")
    if (method.make_state is None) and (method.update_state is not None):
        raise ValueError(f"Method {method.name!r}: update_state needs make_state.")
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

