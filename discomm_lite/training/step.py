"""One training step: BITS, SimDINO or DINO, CPU to multi-GPU.

`train_step` follows DINO's `train_one_epoch` (facebookresearch/dino main_dino.py) for one batch:
schedules -> teacher forward on the global views -> student forward on all views -> loss ->
backward, clip, step -> EMA. Every schedule is a pure function of the global step
(`StepSchedule`), so a resumed run continues the same trajectory. The method's own parts (its
loss, its running state, its hook before the optimizer step) come from its `method.Method` record.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from discomm_lite.config import Config
from discomm_lite.method import Method
from discomm_lite.training import schedules
from discomm_lite.training.ema import ema_update
from discomm_lite.training.optim import clip_gradients
from discomm_lite.training.reset import head_lr_and_momentum
from discomm_lite.training.setup import Forwards, TrainState


@dataclass(frozen=True)
class StepSchedule:
    """Where the schedules of a run turn (in global steps), and its head resets' calendar."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    reinit_every: int = 0
    reinit_at_start: bool = False
    reinit_partial_period: bool = True
    reinit_warmup_steps: int = 0

    @classmethod
    def from_config(cls, config: Config, steps_per_epoch: int) -> StepSchedule:
        """The turning points of `config`'s schedules for epochs of `steps_per_epoch` steps."""
        return cls(steps_per_epoch, config.epochs * steps_per_epoch,
                   config.warmup_epochs * steps_per_epoch,
                   config.reinit_every, config.reinit_at_start, config.reinit_partial_period,
                   # None: as long as the run's own warm-up, the schedule the first head had
                   config.warmup_epochs * steps_per_epoch if config.reinit_warmup_steps is None
                   else config.reinit_warmup_steps)

    @property
    def epochs(self) -> int:
        return self.total_steps // self.steps_per_epoch

    def reinit_due(self, epoch: int) -> bool:
        """Whether the head is re-initialised at the start of `epoch` (`schedules.reinit_due`)."""
        return schedules.reinit_due(epoch, self.reinit_every, self.reinit_at_start, self.epochs,
                                    self.reinit_partial_period)

    def steps_since_reinit(self, step: int) -> int | None:
        """How many steps before `step` the last head reset happened (0 at the reset's own first
        step); None before the first reset."""
        epoch = schedules.last_reinit_epoch(step // self.steps_per_epoch, self.reinit_every,
                                            self.reinit_at_start, self.epochs,
                                            self.reinit_partial_period)
        return None if epoch is None else step - epoch * self.steps_per_epoch

    def epoch_end(self, step: int, every: int) -> bool:
        """Whether `step` ends an epoch whose number is a multiple of `every` (> 0), or the last."""
        finished, rest = divmod(step, self.steps_per_epoch)
        return every > 0 and rest == 0 and (finished % every == 0 or step == self.total_steps)


def train_step(state: TrainState, views: list[Tensor], config: Config, method: Method,
               forward: Forwards, schedule: StepSchedule
               ) -> tuple[dict[str, Tensor], dict[str, float]]:
    """One optimisation step on a batch of views; returns (device metrics, schedule values).

    DINO's train_one_epoch (facebookresearch/dino main_dino.py) for one batch; `views` are V
    tensors (n, 3, S_v, S_v), the first `config.n_global` the global crops.

    schedules -> teacher forward on the global views -> student forward on all views -> loss ->
    backward, clip, step -> EMA. Nothing here waits for the device (no `.item()`).
    """
    step, epoch = state.step, state.step // schedule.steps_per_epoch
    # ---- schedules: pure functions of the global step
    lr = schedules.warmup_cosine(step, schedule.total_steps, schedule.warmup_steps, config.lr,
                                 config.lr_end)
    wd = schedules.cosine(step, schedule.total_steps, config.weight_decay,
                          config.weight_decay_end)
    momentum = schedules.cosine(step, schedule.total_steps, config.momentum, config.momentum_end)
    head_lr, head_momentum = head_lr_and_momentum(
        schedule.steps_since_reinit(step), lr, momentum,
        warmup_steps=schedule.reinit_warmup_steps, catchup_steps=config.reinit_catchup_steps,
        catchup_momentum=config.reinit_teacher_momentum)
    for group in state.optimizer.param_groups:
        group["lr"] = head_lr if group["is_head"] else lr
        if group["apply_weight_decay"]:
            group["weight_decay"] = wd
    if forward.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]

    # ---- forward: teacher on the global views only, student on every view
    device_type = views[0].device.type
    with torch.autocast(device_type, dtype=state.autocast_dtype or torch.float32,
                        enabled=state.autocast_dtype is not None):
        with torch.no_grad():
            teacher_logits = forward.teacher(views[:config.n_global])
        student_logits = forward.student(views)
        loss, parts = method.loss(config, student_logits, teacher_logits, state.method_state,
                                  step, schedule.steps_per_epoch)

    # ---- backward, clip, step
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(state.optimizer)
    grad_norm = clip_gradients(list(state.student.parameters()), config.clip_grad,
                               config.clip_grad_mode)
    if method.before_optimizer_step is not None:
        method.before_optimizer_step(state.student, epoch, config)
    state.scaler.step(state.optimizer)
    state.scaler.update()

    # ---- teacher: EMA of the student (its head's momentum may differ after a reset), and the
    # method's running state
    ema_update(state.teacher.backbone, state.student.backbone, momentum)
    ema_update(state.teacher.head, state.student.head, head_momentum)
    state.method_state = method.next_state(state.method_state, teacher_logits, config)
    state.step += 1
    return ({"loss": loss.detach(), **parts, "grad_norm": grad_norm},
            {"lr": lr, "weight_decay": wd, "momentum": momentum, "head_lr": head_lr,
             "head_momentum": head_momentum})
