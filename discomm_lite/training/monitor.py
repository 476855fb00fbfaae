"""What the training loop watches: stop signals, the metrics it buffers, the health of the run.

Kept apart from the loop so that `engine.train` reads in a screen. Nothing here waits for the
device except `MetricBuffer.flush`, the one host-device sync of a logging interval (DINO's
MetricLogger syncs every step; the loop here reads its metrics back every `log_every` steps),
and `check_finite_state`, once per checkpoint.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from discomm_lite import distributed
from discomm_lite.config import Config
from discomm_lite.method import Method
from discomm_lite.training.checkpoint import non_finite_tensors


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the last checkpoint on disk is the last good state."""


class NonFiniteStateError(FloatingPointError):
    """A weight or buffer became NaN or inf; it was not saved, the last checkpoint is good."""


class ChannelCollapseWarning(UserWarning):
    """A method's health check failed: e.g. most of the teacher's bits are constant over a batch."""


class RunInterrupted(SystemExit):
    """SIGTERM stopped a run after its checkpoint was saved: exit status 128 + the signal (143).

    A SystemExit, so that a caller that does not catch it stops too (a notebook cell, a study
    runner) instead of going on as if the run had finished; the CLI prints its message.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.signum, self.message = signum, message

    def __str__(self) -> str:
        return self.message


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, saves a checkpoint and stops.

    A context manager: the previous handlers come back on exit. Outside the main thread (where
    Python allows no signal handlers) it only ever reports no signal.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises SystemExit(143) so that `finally` blocks run (a run folder's
    lock is released); its default action ends the process at once. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class MetricBuffer:
    """A step's metrics kept on the device; read back, averaged, as one record at a flush.

    Args:
        steps_per_epoch: to give each record its (fractional) epoch.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.started = time.perf_counter()
        self.steps: list[int] = []
        self.values: list[dict[str, Tensor]] = []
        self.host: list[dict[str, float]] = []

    def add(self, step: int, values: dict[str, Tensor], host: dict[str, float]) -> None:
        """Keep the device scalars `values` and host floats `host` of global step `step`."""
        self.steps.append(step)
        self.values.append(values)
        self.host.append(host)

    def flush(self) -> dict | None:
        """The "train" record of the steps since the last flush (None when there are none).

        Every value is its mean over those steps (and over processes); the loss of each step is
        checked to be finite first (`check_finite`).
        """
        if not self.steps:
            return None
        names = list(self.values[0])
        stacked = torch.stack([torch.stack([v[n].float() for n in names]) for v in self.values])
        # Each process's loss is over its share of the batch: log their mean, the global value.
        stacked = distributed.all_reduce_sum(stacked) / distributed.world_size()
        table = stacked.cpu().tolist()  # the one host-device sync of the interval
        columns = {n: [row[i] for row in table] for i, n in enumerate(names)}
        columns.update({n: [h[n] for h in self.host] for n in self.host[0]})
        steps, self.steps, self.values, self.host = self.steps, [], [], []
        check_finite(steps, columns)
        return {"kind": "train", "step": steps[-1], "epoch": steps[-1] / self.steps_per_epoch,
                **{k: sum(v) / len(v) for k, v in columns.items()},
                "time": time.perf_counter() - self.started}


def check_finite(steps: list[int], values: dict[str, list[float]]) -> None:
    """Raise NonFiniteLossError, naming the step and its loss parts, at the first bad loss."""
    for i, step in enumerate(steps):
        if not math.isfinite(values["loss"][i]):
            parts = {k: v[i] for k, v in values.items()}
            raise NonFiniteLossError(
                f"The loss is not finite at step {step} (parts: {parts}). The run stopped; its "
                "last checkpoint is the last good state. Lower lr, raise eps, or use fp32/bf16."
            )


def check_finite_state(student: nn.Module, teacher: nn.Module, method_state: Mapping[str, Tensor],
                       step: int, checkpoint: Path) -> None:
    """Raise NonFiniteStateError, naming the first bad tensor, unless every weight and buffer of
    `student` and `teacher` and every tensor of the method's running state is finite: what a
    checkpoint may hold.

    A finite loss does not imply it (an inf BatchNorm running_var). One host-device sync; under
    torchrun every process learns whether any process's tensors are bad (the teachers' batch
    statistics differ between processes), so that all stop together.
    """
    named = [*((f"student's {k}", v) for k, v in student.state_dict().items()),
             *((f"teacher's {k}", v) for k, v in teacher.state_dict().items()),
             *((f"method's {k}", v) for k, v in method_state.items())]
    bad = non_finite_tensors(named)
    count = len(bad)
    if distributed.is_distributed():
        device = next(student.parameters()).device
        count = int(distributed.all_reduce_sum(torch.tensor([count], device=device)).item())
    if count:
        first = bad[0] if bad else "a tensor of another process"
        more = f" ({len(bad) - 1} more tensors too)" if len(bad) > 1 else ""
        raise NonFiniteStateError(
            f"The {first} holds NaN or inf values at step {step}{more}: the run stopped without "
            f"saving this state, so {checkpoint} (if any) is still the last good one. Lower lr, "
            "raise eps, or use fp32/bf16."
        )


def health_warning(record: dict, method: Method, config: Config) -> dict | None:
    """Run the method's health check on a train record: warn and return a "warning" record.

    None when the method has no health check or the check passes.
    """
    message = None if method.health_check is None else method.health_check(record, config)
    if not message:
        return None
    warnings.warn(message, ChannelCollapseWarning, stacklevel=3)
    return {"kind": "warning", "step": record["step"], "message": message}
