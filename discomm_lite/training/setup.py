"""What a run trains: the state a checkpoint holds, built for a new run, and the step's forwards.

`TrainState` holds everything that changes during training (the models, the optimizer, the loss
scaler, the method's running state, the step), exactly what a checkpoint holds with the RNG;
`build_state` makes a new run's, `make_forwards` wraps the models for DDP and torch.compile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from discomm_lite import distributed
from discomm_lite.config import Config
from discomm_lite.method import Method, MethodState
from discomm_lite.models.backbones import is_convnet
from discomm_lite.models.model import MultiCropModel, make_model, make_teacher
from discomm_lite.training.optim import make_optimizer, upgrade_optimizer_state
from discomm_lite.training.start import start_from_pretrained


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA by default, none (fp32) on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass
class TrainState:
    """Everything that changes during training: exactly what a checkpoint holds (with the RNG)."""

    student: MultiCropModel
    teacher: MultiCropModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    # The method's running state ({} for BITS and SimDINO; DINO's: `method.dino`).
    method_state: MethodState = field(default_factory=dict)
    step: int = 0

    def state_dict(self) -> dict:
        """Models, optimizer, loss scaler, the method's state and the step: a checkpoint without
        its config and RNG."""
        return {"student": self.student.state_dict(), "teacher": self.teacher.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "method_state": self.method_state, "step": self.step}

    def load_state_dict(self, payload: dict, method: Method) -> None:
        """Restore everything `state_dict` holds from a checkpoint's payload (also one written
        before the method's state or the head's optimizer groups had their present form)."""
        self.student.load_state_dict(payload["student"])
        self.teacher.load_state_dict(payload["teacher"])
        self.optimizer.load_state_dict(upgrade_optimizer_state(payload["optimizer"],
                                                               self.student))
        self.scaler.load_state_dict(payload["scaler"])
        for name, value in method.saved_state(payload).items():
            self.method_state[name].copy_(value)
        self.step = payload["step"]


def build_state(config: Config, method: Method, device: torch.device) -> TrainState:
    """Student, teacher (same weights), AdamW, loss scaler and the method's state of a new run
    (from `config.pretrained`'s teacher when given: `start.start_from_pretrained`)."""
    torch.manual_seed(config.seed)  # every process draws the same initial weights
    student = make_model(config)
    pretrained_state = (start_from_pretrained(student, config, method) if config.pretrained
                        else {})
    teacher = make_teacher(student)
    student.to(device)
    teacher.to(device)
    if _channels_last(student, device):
        student.to(memory_format=torch.channels_last)
        teacher.to(memory_format=torch.channels_last)
    method_state = method.initial_state(config, device)
    for name, value in pretrained_state.items():
        method_state[name].copy_(value)
    autocast_dtype = resolve_precision(config.precision, device)
    return TrainState(
        student=student, teacher=teacher, optimizer=make_optimizer(student, config, device),
        scaler=torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16),
        autocast_dtype=autocast_dtype, method_state=method_state,
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
