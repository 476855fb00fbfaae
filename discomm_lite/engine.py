"""The training engine: one plain-PyTorch loop for BITS, SimDINO and DINO, CPU to multi-GPU.

Read `train` top to bottom: set-up, resume, then for each step: schedules -> teacher forward on
the global views -> student forward on all views -> loss -> backward, clip, step -> EMA.
Everything that changes during training is in the checkpoint, so a resumed run continues the
same trajectory; every schedule is a pure function of the global step.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from discomm_lite import distributed, runlog, schedules
from discomm_lite.backbones import is_convnet
from discomm_lite.checkpoint import (
    load_checkpoint,
    load_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from discomm_lite.choices import CLIP_GRAD_MODES
from discomm_lite.config import Config
from discomm_lite.ema import ema_update
from discomm_lite.methods import get_method
from discomm_lite.model import (
    MultiCropModel,
    make_model,
    make_teacher,
    param_groups,
    reinit_head,
)
from discomm_lite.pipeline import load_splits, make_train_views

Callback = Callable[[dict], None]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the last checkpoint on disk is the last good state."""


class ChannelCollapseWarning(UserWarning):
    """Most of the teacher's bits are constant over a batch: the channel carries little."""


@dataclass
class Run:
    """What `train` returns: the final models and every metrics record."""

    config: Config
    out_dir: Path | None
    student: MultiCropModel
    teacher: MultiCropModel
    records: list[dict] = field(default_factory=list)
    interrupted: bool = False

    @property
    def backbone(self) -> nn.Module:
        """The teacher backbone: what is evaluated (the paper evaluates the teacher)."""
        return self.teacher.backbone


# ---- loss of each method ---------------------------------------------------------------------
def compute_loss(config: Config, student_logits: Sequence[Tensor],
                 teacher_logits: Sequence[Tensor], *, center: Tensor | None,
                 teacher_temp: float) -> tuple[Tensor, dict]:
    """The configured method's loss and its parts (`methods.Method.loss`)."""
    return get_method(config.method).loss(config, student_logits, teacher_logits, center=center,
                                          teacher_temp=teacher_temp)


# ---- small pieces of the loop ----------------------------------------------------------------
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
    # fused AdamW: one kernel for all parameters on CUDA; not available on CPU.
    return torch.optim.AdamW(param_groups(model), lr=config.lr,
                             weight_decay=config.weight_decay, fused=device.type == "cuda")


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, saves a checkpoint and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _MetricBuffer:
    """Loss parts accumulated on the device; read back only at a flush (no per-step sync)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[dict[str, Tensor]] = []

        self.host: list[dict[str, float]] = []

    def add(self, step: int, values: dict[str, Tensor], host: dict[str, float]) -> None:
        self.steps.append(step)
        self.values.append(values)
        self.host.append(host)

    def flush(self) -> tuple[list[int], dict[str, list[float]]]:
        if not self.steps:
            return [], {}
        names = list(self.values[0])
        stacked = torch.stack([torch.stack([v[n].float() for n in names]) for v in self.values])
        # Each process's loss is over its share of the batch: log their mean, the global value.
        stacked = distributed.all_reduce_sum(stacked) / distributed.world_size()
        table = stacked.cpu().tolist()  # the one host-device sync of the interval
        columns = {n: [row[i] for row in table] for i, n in enumerate(names)}
        columns.update({n: [h[n] for h in self.host] for n in self.host[0]})
        steps, self.steps, self.values, self.host = self.steps, [], [], []
        return steps, columns


# ---- the state of a run and one training step ----------------------------------------------------
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
        return {"student": self.student.state_dict(), "teacher": self.teacher.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "center": self.center, "step": self.step}

    def load_state_dict(self, payload: dict) -> None:
        self.student.load_state_dict(payload["student"])
        self.teacher.load_state_dict(payload["teacher"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        if self.center is not None:
            self.center.copy_(payload["center"])
        self.step = payload["step"]


def build_state(config: Config, device: torch.device) -> TrainState:
    """Student, teacher (same weights), AdamW, loss scaler and DINO center of a new run."""
    torch.manual_seed(config.seed)  # every process draws the same initial weights
    student = make_model(config)
    pretrained_center = _load_pretrained(student, config) if config.pretrained else None
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
    """Where the schedules of a run turn: all in global steps."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    teacher_temp_steps: int

    @classmethod
    def from_config(cls, config: Config, steps_per_epoch: int) -> StepSchedule:
        return cls(steps_per_epoch, config.epochs * steps_per_epoch,
                   config.warmup_epochs * steps_per_epoch,
                   config.teacher_temp_warmup_epochs * steps_per_epoch)


def train_step(state: TrainState, views: list[Tensor], config: Config, forward: Forwards,
               schedule: StepSchedule) -> tuple[dict[str, Tensor], dict[str, float]]:
    """One optimisation step on a batch of views; returns (device metrics, schedule values).

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
    for group in state.optimizer.param_groups:
        group["lr"] = lr
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
    ema_update(state.teacher, state.student, momentum)
    if state.center is not None:
        state.center = method.update_center(state.center, teacher_logits, config)
    state.step += 1
    return ({"loss": loss.detach(), **parts, "grad_norm": grad_norm},
            {"lr": lr, "weight_decay": wd, "momentum": momentum})



# ---- the loop ----------------------------------------------------------------------------------
def train(
    config: Config,
    *,
    callbacks: Sequence[Callback] = (),
    max_steps: int | None = None,
    progress: bool = True,
) -> Run:
    """Train `config` and return the `Run`; with `config.out_dir`, checkpoint there and resume.

    The run folder receives config.json, metrics.jsonl (one JSON record per line) and
    checkpoint.pt (every `checkpoint_every` epochs, at the end, and on SIGINT/SIGTERM). If it
    already holds a checkpoint of the same configuration, training continues from it.
    `callbacks` receive each metrics record as it is written (live plots in notebooks).
    `max_steps` stops after that many global steps in all (tests, smoke runs), with a checkpoint.
    """
    device = distributed.setup_from_env(config.device)
    rank, world = distributed.rank(), distributed.world_size()
    out = Path(config.out_dir) if config.out_dir else None
    metrics_path = out / runlog.METRICS_FILE if out is not None else None
    ckpt_path = out / "checkpoint.pt" if out is not None else None

    # ---- data
    train_set, test_set = load_splits(config, with_test=config.eval_every > 0)
    batches = make_train_views(config, train_set, device, rank, world)
    steps_per_epoch = batches.steps_per_epoch

    # ---- model, teacher, optimizer, and everything else a checkpoint holds
    state = build_state(config, device)
    records: list[dict] = []
    if ckpt_path is not None and ckpt_path.exists():
        payload = load_checkpoint(ckpt_path, config, map_location=device)
        state.load_state_dict(payload)
        set_rng_state(payload["rng"])
        if distributed.is_main_process():
            runlog.truncate_after(metrics_path, state.step)
        distributed.barrier()  # the other processes read metrics.jsonl once rank 0 rewrote it
        records = runlog.read(metrics_path)
    elif out is not None and distributed.is_main_process():
        runlog.start(metrics_path)
        config.save(out / "config.json")
    student, teacher, optimizer = state.student, state.teacher, state.optimizer
    forward = make_forwards(state, config, device)
    schedule = StepSchedule.from_config(config, steps_per_epoch)

    run = Run(config, out, student, teacher, records)

    log = runlog.RunLog(metrics_path if distributed.is_main_process() else None, run.records,
                        callbacks)
    emit = log.emit

    def save() -> None:
        if ckpt_path is None:
            return
        if distributed.is_main_process():
            save_checkpoint(ckpt_path, {
                "config": config.to_dict(), **state.state_dict(),
                "epoch": state.step // steps_per_epoch, "rng": rng_state(),
            })
        distributed.barrier()

    buffer = _MetricBuffer()
    started = time.perf_counter()

    def flush() -> None:
        steps, values = buffer.flush()
        if not steps:
            return
        _check_finite(steps, values)
        record = {"kind": "train", "step": steps[-1], "epoch": steps[-1] / steps_per_epoch,
                  **{k: sum(v) / len(v) for k, v in values.items()},
                  "time": time.perf_counter() - started}
        emit(record)
        health_check = get_method(config.method).health_check
        message = health_check(record, config) if health_check is not None else None
        if message:
            warnings.warn(message, ChannelCollapseWarning, stacklevel=2)
            emit({"kind": "warning", "step": steps[-1], "message": message})

    last_step = schedule.total_steps if max_steps is None else min(schedule.total_steps,
                                                                   max_steps)
    interrupted = False
    with _StopRequest() as stop:
        while state.step < last_step:
            epoch, start = divmod(state.step, steps_per_epoch)
            if start == 0 and schedules.reinit_due(epoch, config.reinit_every,
                                                   config.reinit_at_start):
                reinit_head(student, teacher, optimizer, policy=config.teacher_head_policy,
                            seed=config.seed * 1009 + epoch)
                emit({"kind": "reinit", "step": state.step, "epoch": epoch})
            student.train()
            teacher.train()
            bar = _progress(progress, epoch, start, steps_per_epoch, config.epochs)
            for views in batches.epoch(epoch, start):
                values, host = train_step(state, views, config, forward, schedule)
                buffer.add(state.step, values, host)
                if bar is not None:
                    bar.update(1)
                if state.step % config.log_every == 0:
                    flush()
                if stop.signal is not None or state.step >= last_step:
                    break
            if bar is not None:
                bar.close()
            flush()
            if stop.signal is not None:
                save()
                interrupted = True
                break
            epoch_done = state.step % steps_per_epoch == 0
            finished = state.step // steps_per_epoch
            if epoch_done and test_set is not None and (finished % config.eval_every == 0
                                                        or state.step == schedule.total_steps):
                emit({"kind": "eval", "step": state.step, "epoch": finished,
                      **_knn_eval(teacher, train_set, test_set, config.image_size, device)})
            if state.step >= last_step or (epoch_done
                                           and finished % config.checkpoint_every == 0):
                save()
    run.interrupted = interrupted
    if interrupted:
        message = (f"Training stopped by signal {stop.signal} at step {state.step}"
                   + (f"; checkpoint saved in {ckpt_path}, train again to resume."
                      if ckpt_path else "."))
        emit({"kind": "interrupted", "step": state.step, "message": message})
        if stop.signal == signal.SIGINT:
            raise KeyboardInterrupt(message)
    return run


def _check_finite(steps: list[int], values: dict[str, list[float]]) -> None:
    for i, step in enumerate(steps):
        if not math.isfinite(values["loss"][i]):
            parts = {k: v[i] for k, v in values.items()}
            raise NonFiniteLossError(
                f"The loss is not finite at step {step} (parts: {parts}). The run stopped; its "
                "last checkpoint is the last good state. Lower lr, raise eps, or use fp32/bf16."
            )


def _progress(enabled: bool, epoch: int, start: int, steps_per_epoch: int, epochs: int):
    if not enabled or not distributed.is_main_process():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{epochs}",
                leave=False)


def _load_pretrained(student: MultiCropModel, config: Config) -> Tensor | None:
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


@torch.no_grad()
def _knn_eval(teacher: MultiCropModel, train_set, test_set, image_size: int,
              device: torch.device) -> dict:
    """k-NN accuracy of the teacher backbone (DINO and lightly protocols), on the main process."""
    from discomm_lite.evaluate import evaluate_knn
    from discomm_lite.features import extract_features

    result: dict = {}
    if distributed.is_main_process():
        bank = extract_features(teacher.backbone, train_set, image_size=image_size, device=device)
        query = extract_features(teacher.backbone, test_set, image_size=image_size, device=device)
        result = evaluate_knn(bank["feats"], bank["labels"], query["feats"], query["labels"])
    distributed.barrier()
    teacher.train()
    return result

