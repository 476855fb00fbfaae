"""One training step and the state it changes: BITS, SimDINO or DINO, CPU to multi-GPU.

`train_step` follows DINO's `train_one_epoch` (facebookresearch/dino main_dino.py) for one batch:
schedules -> teacher forward on the global views -> student forward on all views -> loss ->
backward, clip, step -> EMA. `TrainState` holds everything that changes during training, exactly
what a checkpoint holds, and every schedule is a pure function of the global step, so a resumed
run continues the same trajectory. The method's own parts come from its `methods.Method` record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from discomm_lite import distributed, schedules
from discomm_lite.backbones import is_convnet
from discomm_lite.checkpoint import load_checkpoint, load_model
from discomm_lite.choices import CLIP_GRAD_MODES
from discomm_lite.config import Config
from discomm_lite.ema import ema_update
from discomm_lite.methods import get_method
from discomm_lite.model import (
    MultiCropModel,
    make_model,
    make_teacher,
    param_groups,
    upgrade_optimizer_state,
)


# ---- the pieces of a step ----------------------------------------------------------------------
def compute_loss(config: Config, student_logits: Sequence[Tensor],
                 teacher_logits: Sequence[Tensor], *, center: Tensor | None,
                 teacher_temp: float) -> tuple[Tensor, dict]:
    """The configured method's loss and its parts (`methods.Method.loss`)."""
    return get_method(config.method).loss(config, student_logits, teacher_logits, center=center,
                                          teacher_temp=teacher_temp)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA by default, none (fp32) on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def clip_gradients(parameters: Sequence[nn.Parameter], max_norm: float, mode: str) -> Tensor:
    """Clip gradients in place; return the norm of all gradients before clipping (a device scalar).

    mode "per_param": each parameter's gradient g with |g| > max_norm is scaled by
    max_norm / (|g| + 1e-6), each tensor on its own (DINO's and SimDINO's `utils.clip_gradients`,
    the convention of the paper's "gradient clipping 1"). mode "global": all gradients are scaled
    together so that their joint norm is at most max_norm (`torch.nn.utils.clip_grad_norm_`).
    max_norm 0 leaves the gradients as they are. No host-device sync in either mode.
    """
    if mode not in CLIP_GRAD_MODES:
        raise ValueError(f"mode must be one of {CLIP_GRAD_MODES}, got {mode!r}.")
    with_grad = [p for p in parameters if p.grad is not None]
    if mode == "global" and max_norm > 0:
        return nn.utils.clip_grad_norm_(with_grad, max_norm)
    grads = [p.grad for p in with_grad]
    norms = torch.stack(torch._foreach_norm(grads))  # (P,) one norm per parameter tensor
    if max_norm > 0:
        scales = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # 1: the tensor is left untouched
        torch._foreach_mul_(grads, list(scales.unbind()))
    return torch.linalg.vector_norm(norms)


def make_optimizer(model: nn.Module, config: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `param_groups(model)`, as DINO's main_dino.py (factory).

    lr and weight decay are overwritten every step by the schedules (`train_step`).
    """
    # fused AdamW: one kernel for all parameters on CUDA; not available on CPU.
    return torch.optim.AdamW(param_groups(model), lr=config.lr,
                             weight_decay=config.weight_decay, fused=device.type == "cuda")


@dataclass
class TrainState:
    """Everything that changes during training: exactly what a checkpoint holds (with the RNG)."""

    student: MultiCropModel
    teacher: MultiCropModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    center: Tensor | None  # DINO's running mean of teacher outputs (None for BITS, SimDINO)
    autocast_dtype: torch.dtype | None
    step: int = 0

    def state_dict(self) -> dict:
        """Models, optimizer, loss scaler, center and step: a checkpoint without config and RNG."""
        return {"student": self.student.state_dict(), "teacher": self.teacher.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "center": self.center, "step": self.step}

    def load_state_dict(self, payload: dict) -> None:
        """Restore everything `state_dict` holds from a checkpoint's payload."""
        self.student.load_state_dict(payload["student"])
        self.teacher.load_state_dict(payload["teacher"])
        self.optimizer.load_state_dict(upgrade_optimizer_state(payload["optimizer"],
                                                               self.student))
        self.scaler.load_state_dict(payload["scaler"])
        if self.center is not None:
            self.center.copy_(payload["center"])
        self.step = payload["step"]


def build_state(config: Config, device: torch.device) -> TrainState:
    """Student, teacher (same weights), AdamW, loss scaler and DINO center of a new run."""
    torch.manual_seed(config.seed)  # every process draws the same initial weights
    student = make_model(config)
    pretrained_center = _start_from_pretrained(student, config) if config.pretrained else None
    teacher = make_teacher(student)
    student.to(device)
    teacher.to(device)
    if _channels_last(student, device):
        student.to(memory_format=torch.channels_last)
        teacher.to(memory_format=torch.channels_last)
    method = get_method(config.method)
    center = None if method.make_center is None else method.make_center(config, device)
    if pretrained_center is not None:
        center.copy_(pretrained_center)
    autocast_dtype = resolve_precision(config.precision, device)
    return TrainState(
        student=student, teacher=teacher, optimizer=make_optimizer(student, config, device),
        scaler=torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16),
        center=center, autocast_dtype=autocast_dtype,
    )


def _channels_last(student: MultiCropModel, device: torch.device) -> bool:
    # Channels-last lets cuDNN pick its fastest convolution kernels under bf16.
    return device.type == "cuda" and is_convnet(student.backbone)


@dataclass(frozen=True)
class Forwards:
    """How a step calls the models: DDP-wrapped and/or compiled when asked."""

    student: Callable
    teacher: Callable
    channels_last: bool


def make_forwards(state: TrainState, config: Config, device: torch.device) -> Forwards:
    """The step's forwards: the student DDP-wrapped under torchrun, both compiled if asked."""
    model: nn.Module = state.student
    if distributed.is_distributed():
        if device.type == "cuda":
            # Student and teacher both (DINO's main_dino.py): the teacher's batch statistics are
            # then also those of the global batch. The conversion is in place.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            nn.SyncBatchNorm.convert_sync_batchnorm(state.teacher)
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return Forwards(
        student=torch.compile(model) if config.compile else model,
        teacher=torch.compile(state.teacher) if config.compile else state.teacher,
        channels_last=_channels_last(state.student, device),
    )


@dataclass(frozen=True)
class StepSchedule:
    """Where the schedules of a run turn (in global steps), and its head resets' calendar."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    teacher_temp_steps: int
    reinit_every: int = 0
    reinit_at_start: bool = False
    reinit_partial_period: bool = True

    @classmethod
    def from_config(cls, config: Config, steps_per_epoch: int) -> StepSchedule:
        """The turning points of `config`'s schedules for epochs of `steps_per_epoch` steps."""
        return cls(steps_per_epoch, config.epochs * steps_per_epoch,
                   config.warmup_epochs * steps_per_epoch,
                   config.teacher_temp_warmup_epochs * steps_per_epoch,
                   config.reinit_every, config.reinit_at_start, config.reinit_partial_period)

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


def train_step(state: TrainState, views: list[Tensor], config: Config, forward: Forwards,
               schedule: StepSchedule) -> tuple[dict[str, Tensor], dict[str, float]]:
    """One optimisation step on a batch of views; returns (device metrics, schedule values).

    DINO's train_one_epoch (facebookresearch/dino main_dino.py) for one batch; `views` are V
    tensors (n, 3, S_v, S_v), the first `config.n_global` the global crops.

    schedules -> teacher forward on the global views -> student forward on all views -> loss ->
    backward, clip, step -> EMA. Nothing here waits for the device (no `.item()`).
    """
    step, epoch = state.step, state.step // schedule.steps_per_epoch
    method = get_method(config.method)
    # ---- schedules: pure functions of the global step
    lr = schedules.warmup_cosine(step, schedule.total_steps, schedule.warmup_steps, config.lr,
                                 config.lr_end)
    wd = schedules.cosine(step, schedule.total_steps, config.weight_decay,
                          config.weight_decay_end)
    momentum = schedules.cosine(step, schedule.total_steps, config.momentum, config.momentum_end)
    teacher_temp = schedules.linear_then_constant(step, schedule.teacher_temp_steps,
                                                  config.teacher_temp_warmup, config.teacher_temp)
    head_lr, head_momentum = _after_reinit(schedule.steps_since_reinit(step), lr, momentum,
                                           config)
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
        loss, parts = compute_loss(config, student_logits, teacher_logits, center=state.center,
                                   teacher_temp=teacher_temp)

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

    # ---- teacher: EMA of the student (and DINO's center)
    ema_update(state.teacher.backbone, state.student.backbone, momentum)
    ema_update(state.teacher.head, state.student.head, head_momentum)
    if state.center is not None:
        state.center = method.update_center(state.center, teacher_logits, config)
    state.step += 1
    return ({"loss": loss.detach(), **parts, "grad_norm": grad_norm},
            {"lr": lr, "weight_decay": wd, "momentum": momentum})


def _after_reinit(since: int | None, lr: float, momentum: float,
                  config: Config) -> tuple[float, float]:
    """The head's lr and the teacher head's EMA momentum, `since` steps after a head reset.

    The new head's lr ramps linearly from lr / reinit_warmup_steps to lr over its first
    reinit_warmup_steps steps; for reinit_catchup_steps steps the teacher head follows the
    student's at reinit_teacher_momentum instead of the schedule's momentum. Before the first
    reset (`since` None), and after those steps, both are the schedule's.
    """
    if since is None:
        return lr, momentum
    if since < config.reinit_warmup_steps:
        lr = lr * (since + 1) / config.reinit_warmup_steps
    if since < config.reinit_catchup_steps and config.reinit_teacher_momentum is not None:
        momentum = config.reinit_teacher_momentum
    return lr, momentum


def _start_from_pretrained(student: MultiCropModel, config: Config) -> Tensor | None:
    """Start the student from the teacher of `config.pretrained`, as a continued run would.

    The backbone always; the head too unless `reinit_at_start` (the loop then draws a fresh one
    at epoch 0), which the paper's Table 8 adaptation needs for BITS-fixed, DINO and SimDINO.
    Returns the checkpoint's DINO center when its head is loaded into a DINO run, else None.
    """
    payload = load_checkpoint(config.pretrained)
    saved = payload["config"]
    if saved["backbone"] != config.backbone:
        raise ValueError(
            f"Config.pretrained = {config.pretrained!r} holds a {saved['backbone']!r} "
            f"backbone but Config.backbone = {config.backbone!r}: set backbone to match."
        )
    source = load_model(payload, "teacher")
    student.backbone.load_state_dict(source.backbone.state_dict())
    if config.reinit_at_start:
        return None
    head = source.head.state_dict()
    expected = student.head.state_dict()
    shapes = {k: tuple(v.shape) for k, v in head.items()}
    wanted = {k: tuple(v.shape) for k, v in expected.items()}
    if shapes != wanted:
        differ = sorted(k for k in shapes.keys() | wanted.keys() if shapes.get(k) != wanted.get(k))
        described = "; ".join(f"{k}: checkpoint {shapes.get(k)} vs run {wanted.get(k)}"
                              for k in differ[:4])
        settings = ", ".join(f"{k}={saved.get(k)!r}" for k in (
            "method", "n_bits", "head_hidden_dim", "head_norm", "n_prototypes",
            "head_bottleneck_dim"))
        raise ValueError(
            f"Config.pretrained = {config.pretrained!r} holds a head that does not fit this "
            f"run's ({described}); it was built with {settings}. Set reinit_at_start=True to "
            "start from a fresh head, or give the run those head settings to continue with it."
        )
    student.head.load_state_dict(head)
    return payload.get("center") if get_method(config.method).make_center is not None else None
