"""Atomic checkpoints that refuse to load into the wrong run; `load_model` rebuilds their models."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from discomm_lite.config import Config
from discomm_lite.methods import get_method, method_names
from discomm_lite.model import MultiCropModel, make_model

FORMAT_VERSION = 1
# Older checkpoints also hold "epoch" (the step // steps per epoch), which nothing reads.
REQUIRED_KEYS = ("format_version", "config", "student", "teacher", "optimizer", "step", "rng")

# Fields that may differ between a checkpoint and the run that resumes it: they change where and
# how fast the run goes, not its trajectory.
RESUMABLE_CHANGES = frozenset({
    "device", "num_workers", "data_root", "download", "log_every", "eval_every", "compile",
    "checkpoint_every", "collapse_warn", "out_dir",
})

# Fields added after checkpoints were first written (issue 11), with the behaviour of the code that
# wrote checkpoints lacking them: such a checkpoint resumes where that behaviour is the run's own.
FIELDS_ADDED = {"clip_grad_mode": "global", "coding_rate_scope": "global",
                "coding_rate_input": "student"}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: damaged, or written by another configuration."""


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write `payload` to `path` atomically: a crash mid-write leaves the previous file intact.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the file is
    renamed over `path` (an atomic replace on POSIX and Windows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, config: Config | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint; with `config`, refuse one written by another configuration."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}: check the path (a run's folder holds "
                              "checkpoint.pt once its first epoch has finished).")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {e}). It may be truncated "
            "or damaged; use an earlier checkpoint or start the run again."
        ) from e
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise CheckpointError(f"{path} is not a discomm_lite checkpoint: it lacks {missing}.")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {payload['format_version']}; this "
                              f"version of discomm_lite reads version {FORMAT_VERSION}.")
    if config is not None:
        check_compatible(payload["config"], config, path)
    return payload


def check_compatible(saved: dict, config: Config, path: Path | str) -> None:
    """Refuse to resume a run whose configuration differs in anything but `RESUMABLE_CHANGES`.

    A field missing from an older checkpoint stands for its `FIELDS_ADDED` behaviour;
    coding_rate_input is compared as the value in force (None means the method's default).
    """
    saved = {**FIELDS_ADDED, **saved}
    if saved["coding_rate_input"] is None and saved.get("method") in method_names():
        saved["coding_rate_input"] = get_method(saved["method"]).coding_rate_input
    current = {**config.to_dict(), "coding_rate_input": config.rate_input}
    differ = {k: (saved.get(k), current[k]) for k in current
              if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]}
    if differ:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, a, b in
                          ((k, *v) for k, v in sorted(differ.items())))
        raise CheckpointError(
            f"{path} was written by a different configuration ({lines}). Resume with the "
            "checkpoint's config.json, or give the new run its own output folder."
        )


def rng_state() -> dict:
    """Every random generator's state (torch, Python, NumPy, CUDA), for a checkpoint."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators from `rng_state()`, so a resumed run draws the same numbers."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model(checkpoint: str | Path | dict, which: str = "teacher") -> MultiCropModel:
    """The student or teacher of a checkpoint, rebuilt from the configuration it records.

    The one place that turns a checkpoint back into a model (`load_backbone`, the suite's
    `evaluate_checkpoint` and a run's `pretrained` start all use it). Building the model does not
    move the caller's random number generator.

    Args:
        checkpoint: the checkpoint's path, or the payload `load_checkpoint` read from it (a caller
            that also needs its step, config or DINO center reads the file once).
        which: "teacher" (what the paper evaluates) or "student".

    Returns:
        The `MultiCropModel` (backbone and head) on the CPU, in train mode as built.
    """
    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}.")
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    with torch.random.fork_rng(devices=[]):
        model = make_model(Config.from_dict(payload["config"]))
    model.load_state_dict(payload[which])
    return model


def load_backbone(path: str | Path, *, which: str = "teacher") -> nn.Module:
    """The (teacher) backbone of a checkpoint, in eval mode, as a feature extractor.

    It takes RGB float images in [0, 1], (N, 3, H, W), applies its own normalisation and returns
    (N, D) features; `num_features` is D.
    """
    return load_model(path, which).backbone.eval()
