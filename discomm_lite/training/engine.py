"""The training loop: one plain-PyTorch `train` for every method, CPU to multi-GPU.

Read `train` and `_train` top to bottom: set-up -> resume -> for each epoch: head reset? -> steps ->
flush -> evaluate? -> save? (DINO's sectioned main_dino.py, nanoGPT's loop). One step is
`step.train_step`; the state it changes is built in `setup`; where a run starts (a new folder, its
checkpoint, a pretrained one) is `start`; the head reset is `reset`; what the loop watches (signals,
buffered metrics, health) is `monitor`; metrics.jsonl is written by `runlog`, checkpoints by
`checkpoint`; one run at a time writes a run folder (`runlock`). The evaluation made every
`eval_every` epochs is the caller's (`evaluator`), so that training imports no evaluation code.
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from discomm_lite import distributed
from discomm_lite.atomic import temporaries
from discomm_lite.config import Config
from discomm_lite.data import ImageFolderDataset, ImageTensorDataset
from discomm_lite.data.fingerprint import data_fingerprint
from discomm_lite.method import Method, get_method
from discomm_lite.models.model import MultiCropModel
from discomm_lite.training import runlog
from discomm_lite.training.checkpoint import rng_state, save_checkpoint
from discomm_lite.training.memory import check_training_memory
from discomm_lite.training.monitor import (
    ChannelCollapseWarning,
    MetricBuffer,
    NonFiniteLossError,
    NonFiniteStateError,
    RunInterrupted,
    StopRequest,
    check_finite_state,
    health_warning,
    sigterm_raises,
)
from discomm_lite.training.reset import reinit_head, reset_collapse_warning, reset_health
from discomm_lite.training.runlock import RunFolderLocked, RunLock
from discomm_lite.training.setup import TrainState, build_state, make_forwards
from discomm_lite.training.start import (
    CHECKPOINT_FILE,
    RunFolderError,
    check_run_folder,
    resume_or_start,
)
from discomm_lite.training.step import StepSchedule, train_step
from discomm_lite.views.pipeline import load_split, make_train_views

# What `train` raises and warns.
__all__ = ["ChannelCollapseWarning", "NonFiniteLossError", "NonFiniteStateError", "Run",
           "RunFolderError", "RunFolderLocked", "RunInterrupted", "train"]

Callback = Callable[[dict], None]
# (config, training set, device) -> a function of the teacher backbone returning the scores of an
# "eval" record (`evaluation.during_training.knn_during_training`).
Evaluator = Callable[[Config, ImageTensorDataset | ImageFolderDataset, torch.device],
                     Callable[[nn.Module], dict]]


@dataclass
class Run:
    """What `train` returns: the final models and every metrics record."""

    config: Config
    out_dir: Path | None
    student: MultiCropModel
    teacher: MultiCropModel
    records: list[dict] = field(default_factory=list)

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
    evaluator: Evaluator | None = None,
    callbacks: Sequence[Callback] = (),
    max_steps: int | None = None,
    progress: bool = True,
) -> Run:
    """Train `config` and return the `Run`; with `config.out_dir`, checkpoint there and resume.

    The run folder receives config.json, metrics.jsonl (one JSON record per line) and
    checkpoint.pt (every `checkpoint_every` epochs, at the end, and on SIGINT/SIGTERM), each
    saved only when every weight and buffer is finite (else NonFiniteStateError). If it already
    holds a checkpoint of the same configuration, training continues from it; the folder is
    locked for the run (RunFolderLocked for a second one). `evaluator` makes the "eval" records
    every `eval_every` epochs (none without it). `callbacks` receive each metrics record as it is
    written (live plots in notebooks). `max_steps` (>= 1) stops after that many global steps in
    all (tests, smoke runs), with a checkpoint. SIGINT raises KeyboardInterrupt and SIGTERM
    `RunInterrupted` (a SystemExit with status 143), each after the checkpoint is saved, so that
    no caller goes on as if the run had finished.
    """
    if max_steps is not None and not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps = {max_steps!r} would train nothing: give a number of steps "
                         ">= 1, or None for the whole run.")
    # ---- set-up: device, memory, the run folder's lock, data, the state a checkpoint holds
    device = distributed.setup_from_env(config.device)
    check_training_memory(config, device, distributed.world_size())
    out = Path(config.out_dir) if config.out_dir else None
    with sigterm_raises(), _run_folder_lock(out):
        return _train(config, device, out, evaluator, callbacks, max_steps, progress)


def _train(config: Config, device: torch.device, out: Path | None, evaluator: Evaluator | None,
           callbacks: Sequence[Callback], max_steps: int | None, progress: bool) -> Run:
    """`train` once its run folder is locked: data, state, resume, the loop."""
    method = get_method(config.method)
    train_set = load_split(config, "train")
    evaluate = (evaluator(config, train_set, device)
                if evaluator is not None and config.eval_every > 0 else None)
    batches = make_train_views(config, train_set, device, distributed.rank(),
                               distributed.world_size())
    schedule = StepSchedule.from_config(config, batches.steps_per_epoch)
    state = build_state(config, method, device)
    data = data_fingerprint(train_set) if out is not None else None  # what checkpoints record

    # ---- resume: the checkpoint's state and RNG, and the records up to its step
    run = Run(config, out, state.student, state.teacher,
              resume_or_start(state, config, method, out, device,
                              total_steps=schedule.total_steps, data=data))
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
            if start == 0 and schedule.reinit_due(epoch):
                reinit_head(state.student, state.teacher, state.optimizer,
                            policy=config.teacher_head_policy, seed=config.seed * 1009 + epoch,
                            clear_optimizer_state=config.reinit_optimizer_state == "clear")
                log.emit({"kind": "reinit", "step": state.step, "epoch": epoch})
            # ---- steps, their metrics flushed every log_every steps; both models in train mode
            # (the teacher's BatchNorms use batch statistics, as in DINO)
            state.student.train()
            state.teacher.train()
            with _progress_bar(progress, epoch, start, schedule, config.epochs) as bar:
                for views in batches.epoch(epoch, start):
                    values, host = train_step(state, views, config, method, forward, schedule)
                    buffer.add(state.step, values, host)
                    bar.update(1)
                    if state.step % config.log_every == 0:
                        _flush(buffer, log, method, config)
                    if stop.signal is not None or state.step >= last_step:
                        break
            _flush(buffer, log, method, config)
            if stop.signal is not None:
                _save(out, config, state, data)
                _stop(stop.signal, state.step, out, log)
            # ---- a reset's period ends (the next epoch resets, or the run ends): its health
            if state.step % schedule.steps_per_epoch == 0 and (
                    state.step >= schedule.total_steps
                    or schedule.reinit_due(state.step // schedule.steps_per_epoch)):
                health = reset_health(log.records, state.step)
                if health is not None:
                    log.emit(health)
            # ---- evaluate? save? (at the end of an epoch)
            if evaluate is not None and schedule.epoch_end(state.step, config.eval_every):
                scores = evaluate(state.teacher.backbone) if distributed.is_main_process() else {}
                distributed.barrier()
                log.emit({"kind": "eval", "step": state.step,
                          "epoch": state.step // schedule.steps_per_epoch, **scores})
            if state.step >= last_step or schedule.epoch_end(state.step, config.checkpoint_every):
                _save(out, config, state, data)
    return run


def _stop(signum: int, step: int, out: Path | None, log: runlog.RunLog) -> None:
    """Record where a stop signal stopped the run (its checkpoint is saved), then raise:
    KeyboardInterrupt for SIGINT, RunInterrupted (exit status 143) for SIGTERM."""
    message = (f"Training stopped by signal {signum} at step {step}"
               + (f"; checkpoint saved in {out / CHECKPOINT_FILE}, train again to resume."
                  if out else "."))
    log.emit({"kind": "interrupted", "step": step, "message": message})
    if signum == signal.SIGINT:
        raise KeyboardInterrupt(message)
    raise RunInterrupted(signum, message)


@contextmanager
def _run_folder_lock(out: Path | None) -> Iterator[None]:
    """Hold `out`'s lock while the run writes it (rank 0 takes it for every process).

    The folder must be new, empty or a run folder (`start.check_run_folder`) before anything is
    written there. Also removes the temporary files a run killed while saving left there: with
    the lock held, no other process is writing them.
    """
    if out is None:
        yield
        return
    lock = RunLock(out)
    try:  # also around acquire: a stop signal held back while it ran is raised as it returns
        refusal = None
        if distributed.is_main_process():
            try:
                check_run_folder(out)
                lock.acquire()
            except (RunFolderLocked, RunFolderError, OSError) as err:
                refusal = err
        # Every process learns whether rank 0 holds the lock, so that none waits for it in vain.
        refused = distributed.broadcast_object(None if refusal is None else str(refusal))
        if refusal is not None:
            raise refusal
        if refused is not None:
            raise RunFolderLocked(refused)
        if distributed.is_main_process():
            _remove_temporaries(out)
        yield
    finally:
        lock.release()


def _remove_temporaries(out: Path) -> None:
    """Delete the checkpoint and metrics temporaries of a save that a kill cut short (only the
    names `atomic.atomic_write` makes)."""
    stale = [p for name in (CHECKPOINT_FILE, runlog.METRICS_FILE) for p in temporaries(out, name)]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        warnings.warn(f"Removed {len(stale)} temporary file(s) that a run killed while saving "
                      f"left in {out}: {', '.join(p.name for p in stale)}.", stacklevel=4)


def _save(out: Path | None, config: Config, state: TrainState, data: dict | None) -> None:
    """Write the run's checkpoint (main process) if its state is finite, then wait for all;
    it records the training set's fingerprint `data` (`data.fingerprint`).

    A NaN or inf in any weight or buffer raises NonFiniteStateError instead, and the previous
    checkpoint stays the last good state.
    """
    if out is None:
        return
    check_finite_state(state.student, state.teacher, state.method_state, state.step,
                       out / CHECKPOINT_FILE)
    if distributed.is_main_process():
        save_checkpoint(out / CHECKPOINT_FILE, {
            "config": config.to_dict(), **state.state_dict(), "rng": rng_state(), "data": data})
    distributed.barrier()


def _flush(buffer: MetricBuffer, log: runlog.RunLog, method: Method, config: Config) -> None:
    """Emit the train record of the buffered steps, and a warning if the health check fails."""
    record = buffer.flush()
    if record is None:
        return
    log.emit(record)
    for warning in (health_warning(record, method, config),
                    reset_collapse_warning(log.records)):
        if warning is not None:
            log.emit(warning)


def _progress_bar(enabled: bool, epoch: int, start: int, schedule: StepSchedule, epochs: int):
    """A tqdm bar over the epoch's steps on the main process (a silent one otherwise)."""
    from tqdm.auto import tqdm

    return tqdm(total=schedule.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{epochs}",
                leave=False, disable=not (enabled and distributed.is_main_process()))
