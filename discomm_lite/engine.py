"""The training loop: one plain-PyTorch `train` for every method, CPU to multi-GPU.

Read `train` top to bottom: set-up -> resume -> for each epoch: head reset? -> steps -> flush ->
evaluate? -> save? (DINO's sectioned main_dino.py, nanoGPT's loop). One step is
`step.train_step`; what the loop watches (signals, buffered metrics, health) is in `monitor`;
metrics.jsonl is written by `runlog`, checkpoints by `checkpoint`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from discomm_lite import distributed, runlog, schedules
from discomm_lite.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from discomm_lite.config import Config
from discomm_lite.evaluate import evaluate_knn
from discomm_lite.features import extract_features
from discomm_lite.methods import Method, get_method
from discomm_lite.model import MultiCropModel, reinit_head
from discomm_lite.monitor import (
    ChannelCollapseWarning,
    MetricBuffer,
    NonFiniteLossError,
    StopRequest,
    health_warning,
)
from discomm_lite.pipeline import load_splits, make_train_views
from discomm_lite.step import (
    StepSchedule,
    TrainState,
    build_state,
    make_forwards,
    make_optimizer,
    train_step,
)

# What `train` raises and warns, and make_optimizer, which notebooks import from here.
__all__ = ["ChannelCollapseWarning", "NonFiniteLossError", "Run", "make_optimizer", "train"]

Callback = Callable[[dict], None]
CHECKPOINT_FILE = "checkpoint.pt"


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

    def last(self, kind: str) -> dict | None:
        """The last record of `kind` ("eval", "train", ...), or None."""
        return runlog.last(self.records, kind)


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
    # ---- set-up: device, data, and the state a checkpoint holds
    device = distributed.setup_from_env(config.device)
    train_set, test_set = load_splits(config, with_test=config.eval_every > 0)
    batches = make_train_views(config, train_set, device, distributed.rank(),
                               distributed.world_size())
    schedule = StepSchedule.from_config(config, batches.steps_per_epoch)
    state = build_state(config, device)
    method = get_method(config.method)
    out = Path(config.out_dir) if config.out_dir else None

    # ---- resume: the checkpoint's state and RNG, and the records up to its step
    run = Run(config, out, state.student, state.teacher,
              _resume_or_start(state, config, out, device))
    log = runlog.RunLog(out / runlog.METRICS_FILE if out and distributed.is_main_process()
                        else None, run.records, callbacks)
    forward = make_forwards(state, config, device)
    last_step = schedule.total_steps if max_steps is None else min(schedule.total_steps,
                                                                   max_steps)
    buffer = MetricBuffer(schedule.steps_per_epoch)

    with StopRequest() as stop:
        while state.step < last_step:
            epoch, start = divmod(state.step, schedule.steps_per_epoch)
            # ---- head reset? (seeded by the epoch: a resumed run draws the same head)
            if start == 0 and schedules.reinit_due(epoch, config.reinit_every,
                                                   config.reinit_at_start):
                reinit_head(state.student, state.teacher, state.optimizer,
                            policy=config.teacher_head_policy, seed=config.seed * 1009 + epoch)
                log.emit({"kind": "reinit", "step": state.step, "epoch": epoch})
            # ---- steps, their metrics flushed every log_every steps; both models in train mode
            # (the teacher's BatchNorms use batch statistics, as in DINO)
            state.student.train()
            state.teacher.train()
            with _progress_bar(progress, epoch, start, schedule, config.epochs) as bar:
                for views in batches.epoch(epoch, start):
                    values, host = train_step(state, views, config, forward, schedule)
                    buffer.add(state.step, values, host)
                    bar.update(1)
                    if state.step % config.log_every == 0:
                        _flush(buffer, log, method, config)
                    if stop.signal is not None or state.step >= last_step:
                        break
            _flush(buffer, log, method, config)
            if stop.signal is not None:
                _save(out, config, state)
                run.interrupted = True
                break
            # ---- evaluate? save? (at the end of an epoch)
            if test_set is not None and schedule.epoch_end(state.step, config.eval_every):
                log.emit({"kind": "eval", "step": state.step,
                          "epoch": state.step // schedule.steps_per_epoch,
                          **_knn_eval(state.teacher, train_set, test_set, config.image_size,
                                      device)})
            if state.step >= last_step or schedule.epoch_end(state.step, config.checkpoint_every):
                _save(out, config, state)

    if run.interrupted:
        message = (f"Training stopped by signal {stop.signal} at step {state.step}"
                   + (f"; checkpoint saved in {out / CHECKPOINT_FILE}, train again to resume."
                      if out else "."))
        log.emit({"kind": "interrupted", "step": state.step, "message": message})
        if stop.signal == signal.SIGINT:
            raise KeyboardInterrupt(message)
    return run


def _resume_or_start(state: TrainState, config: Config, out: Path | None,
                     device: torch.device) -> list[dict]:
    """Load `out`'s checkpoint into `state` and return the records up to its step; [] if new.

    A new run folder gets config.json and an empty metrics.jsonl.
    """
    if out is None:
        return []
    metrics = out / runlog.METRICS_FILE
    if (out / CHECKPOINT_FILE).exists():
        payload = load_checkpoint(out / CHECKPOINT_FILE, config, map_location=device)
        state.load_state_dict(payload)
        set_rng_state(payload["rng"])
        if distributed.is_main_process():
            runlog.truncate_after(metrics, state.step)  # what follows will be written again
        distributed.barrier()  # the other processes read metrics.jsonl once rank 0 rewrote it
        return runlog.read(metrics)
    if distributed.is_main_process():
        runlog.start(metrics)
        config.save(out / "config.json")
    return []


def _save(out: Path | None, config: Config, state: TrainState) -> None:
    """Write the run's checkpoint (main process), then wait for every process."""
    if out is None:
        return
    if distributed.is_main_process():
        save_checkpoint(out / CHECKPOINT_FILE, {
            "config": config.to_dict(), **state.state_dict(), "rng": rng_state()})
    distributed.barrier()


def _flush(buffer: MetricBuffer, log: runlog.RunLog, method: Method, config: Config) -> None:
    """Emit the train record of the buffered steps, and a warning if the health check fails."""
    record = buffer.flush()
    if record is None:
        return
    log.emit(record)
    warning = health_warning(record, method, config)
    if warning is not None:
        log.emit(warning)


def _progress_bar(enabled: bool, epoch: int, start: int, schedule: StepSchedule, epochs: int):
    """A tqdm bar over the epoch's steps on the main process (a silent one otherwise)."""
    from tqdm.auto import tqdm

    return tqdm(total=schedule.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{epochs}",
                leave=False, disable=not (enabled and distributed.is_main_process()))


@torch.no_grad()
def _knn_eval(teacher: MultiCropModel, train_set, test_set, image_size: int,
              device: torch.device) -> dict:
    """k-NN accuracy of the teacher backbone (DINO and lightly protocols), on the main process."""
    result: dict = {}
    if distributed.is_main_process():
        bank = extract_features(teacher.backbone, train_set, image_size=image_size, device=device)
        query = extract_features(teacher.backbone, test_set, image_size=image_size, device=device)
        result = evaluate_knn(bank["feats"], bank["labels"], query["feats"], query["labels"])
    distributed.barrier()
    return result
