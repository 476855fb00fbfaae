"""Atomic checkpoints that run no code when read and refuse the wrong run; `load_model`.

A checkpoint holds tensors and plain values only (the RNG states too), and is read with torch's
`weights_only=True` reader, which refuses any other Python object before it is created: a
checkpoint shared by someone else cannot run code here. `load_model` rebuilds its models.
"""

from __future__ import annotations

import pickle
import random
import shutil
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from discomm_lite.atomic import atomic_write
from discomm_lite.config import Config
from discomm_lite.method import get_method, method_names
from discomm_lite.models.model import MultiCropModel, make_model
from discomm_lite.safe_pickle import pickle_imports

# 2: the NumPy and Python RNG states as tensors and lists (issue 15). 1 held NumPy's as a NumPy
# array; such a file is read by the same restricted reader with NumPy's array type allowed (data,
# no code: the globals below), and its RNG state converted.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_FORMAT_1_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType,
                     (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
# What a file of tensors imports (besides torch's storage types): not worth naming in an error.
_TENSOR_GLOBALS = frozenset({"collections.OrderedDict", "_codecs.encode", "torch.Size",
                             "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                             "numpy.ndarray", "numpy.dtype", "numpy._core.multiarray._reconstruct",
                             "numpy.core.multiarray._reconstruct"})
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
                "coding_rate_input": "student", "redraw_factors": "",
                # issue 20: the head reset's handling
                "reinit_optimizer_state": "clear", "reinit_warmup_steps": 0,
                "reinit_teacher_momentum": None, "reinit_catchup_steps": 0,
                "reinit_partial_period": True}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: damaged, or written by another configuration."""


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write `payload` to `path` atomically: a crash mid-write leaves the previous file intact.

    `atomic.atomic_write`: a temporary file in the same folder, flushed, renamed over `path`. A
    failed write (a full disk, a read-only folder) raises CheckpointError saying so.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **payload}, f))
    except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else None
        where = "" if free is None else f"; {free / 2**20:.0f} MiB are free there"
        raise CheckpointError(
            f"Cannot write the checkpoint {path} ({str(err).strip().splitlines()[-1]}{where}). "
            "The previous checkpoint, if any, is intact: free some space or make the folder "
            "writable, then train again to resume from it."
        ) from err


def load_checkpoint(path: str | Path, config: Config | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint; with `config`, refuse one written by another configuration.

    Read with `weights_only=True`: a file holding other Python objects (a pickle that would run
    code) is refused before any of it is created, with the globals it would have imported.
    """
    path = Path(path).expanduser()
    if path.is_symlink() and not path.exists():
        raise CheckpointError(f"{path} is a symbolic link to nothing (its target is missing, or "
                              "it loops through links): point it at a checkpoint.")
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}: check the path (a run's folder holds "
                              "checkpoint.pt once its first epoch has finished).")
    try:
        with torch.serialization.safe_globals(_FORMAT_1_GLOBALS), warnings.catch_warnings():
            # torch warns about the protocol of a bare pickle before it refuses it below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # also what the weights_only reader raises on refusal
        unusual = [name for name in _imports_of(path) if name not in _TENSOR_GLOBALS
                   and not name.endswith("Storage")]
        if not unusual:
            raise _unreadable(path, e) from None
        raise CheckpointError(
            f"{path} is not a discomm_lite checkpoint: it is a Python pickle that imports "
            f"{', '.join(unusual)}, and reading it would run that code. It was refused before "
            "anything in it ran (a discomm_lite checkpoint holds only tensors and plain values). "
            "Do not open it with torch.load(weights_only=False) unless you trust its author."
        ) from None
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise _unreadable(path, e) from e
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        what = (f"a dict with the keys {sorted(map(str, payload))[:8]}"
                if isinstance(payload, dict) else f"a {type(payload).__name__}")
        raise CheckpointError(f"{path} is not a discomm_lite checkpoint: it holds {what}, "
                              f"which lacks {missing}.")
    if payload["format_version"] not in READABLE_FORMATS:
        raise CheckpointError(f"{path} has format version {payload['format_version']}; this "
                              f"version of discomm_lite reads versions {READABLE_FORMATS}.")
    if payload["format_version"] == 1:
        payload["rng"] = _rng_of_format_1(payload["rng"])
    if config is not None:
        check_compatible(payload["config"], config, path)
    return payload


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    text = str(error).strip()
    reason = ("torch's tensors-only reader refused its content" if "Weights only" in text
              else f"{type(error).__name__}: {text.splitlines()[0] if text else ''}")
    return CheckpointError(
        f"{path} is not a readable checkpoint: it is {_kind_of_file(path)}, and reading it "
        f"failed ({reason}). It may be truncated or damaged, or not a checkpoint at all; use an "
        "earlier checkpoint or start the run again."
    )


def _kind_of_file(path: Path) -> str:
    """What `path` is, for an error: torch.save's zip format, a bare pickle, or neither."""
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        return "an empty file"
    if zipfile.is_zipfile(path):
        return "a zip file (torch.save's format)"
    if head.startswith(b"PK"):
        return "a damaged zip file (torch.save's format, perhaps cut short)"
    if head.startswith(b"\x80"):
        return "a bare Python pickle"
    return f"neither torch.save's zip format nor a pickle (it starts with {head!r})"


def _imports_of(path: Path) -> list[str]:
    """The globals the pickle in `path` (a torch zip file or a bare pickle) would import."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return pickle_imports(archive.read(names[0])) if names else []
    return pickle_imports(path.read_bytes())


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
    """Every random generator's state (torch, Python, NumPy, CUDA) as tensors and plain values.

    Plain types, so that the checkpoint reads with `weights_only=True`: Python's state as
    [version, [625 ints], gauss_next], NumPy's MT19937 state as its key (624,) in an int64
    tensor and its position and cached Gaussian as numbers.
    """
    version, internal, gauss_next = random.getstate()
    _, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {"torch": torch.get_rng_state(),
             "python": [version, list(internal), gauss_next],
             "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators from `rng_state()`, so a resumed run draws the same numbers."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["key"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_of_format_1(state: dict) -> dict:
    """A format-1 RNG state (Python's as a tuple, NumPy's as its get_state() tuple) as format 2."""
    version, internal, gauss_next = state["python"]
    _, key, pos, has_gauss, cached_gaussian = state["numpy"]
    return {**state, "python": [version, list(internal), gauss_next],
            "numpy": {"key": torch.from_numpy(np.asarray(key).astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}}


def non_finite_tensors(named: Iterable[tuple[str, Tensor | None]]) -> list[str]:
    """The names of the floating-point tensors of `named` holding a NaN or an inf.

    One host-device sync for all of them (a checkpoint's check, not a step's).
    """
    floats = [(name, t) for name, t in named if t is not None and t.is_floating_point()]
    if not floats:
        return []
    finite = torch.stack([torch.isfinite(t).all().to(floats[0][1].device) for _, t in floats])
    return [floats[i][0] for i in (~finite).nonzero().flatten().tolist()]


def load_model(checkpoint: str | Path | dict, which: str = "teacher") -> MultiCropModel:
    """The student or teacher of a checkpoint, rebuilt from the configuration it records.

    The one place that turns a checkpoint back into a model (`load_backbone`, the suite's
    `evaluate_checkpoint` and a run's `pretrained` start all use it). Building the model does not
    move the caller's random number generator.

    Args:
        checkpoint: the checkpoint's path, or the payload `load_checkpoint` read from it (a caller
            that also needs its step, config or method state reads the file once).
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
    bad = non_finite_tensors(model.state_dict().items())
    if bad:
        where = "" if isinstance(checkpoint, dict) else f"{checkpoint}: "
        raise CheckpointError(
            f"{where}the {which}'s {bad[0]} holds NaN or inf values"
            + (f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else "")
            + ": the run had diverged when this was saved, so no evaluation of it means "
            "anything. Use an earlier checkpoint, or train again with a lower lr.")
    return model


def load_backbone(path: str | Path, *, which: str = "teacher") -> nn.Module:
    """The (teacher) backbone of a checkpoint, in eval mode, as a feature extractor.

    It takes RGB float images in [0, 1], (N, 3, H, W), applies its own normalisation and returns
    (N, D) features; `num_features` is D.
    """
    return load_model(path, which).backbone.eval()
