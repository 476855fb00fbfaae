"""Atomic checkpoints that run no code when read and refuse the wrong run; `load_model`.

A checkpoint holds tensors and plain values only (the RNG states too), and is read with torch's
`weights_only=True` reader, which refuses any other Python object before it is created: a
checkpoint shared by someone else cannot run code here. What torch's reader does not bound (a
zip that inflates a thousandfold, a pickle that hangs the reader, a damaged entry, a tensor that
repeats one value, a model far larger than its weights) is refused by `untrusted` before it is
built. `load_model` rebuilds its models.
"""

from __future__ import annotations

import pickle
import random
import shutil
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from discomm_lite.atomic import atomic_write
from discomm_lite.config import Config
from discomm_lite.config.checks import shown
from discomm_lite.method import get_method, method_names
from discomm_lite.models.model import MultiCropModel, make_model
from discomm_lite.safe_pickle import pickle_imports
from discomm_lite.training.rebuild import check_shapes, checkpoint_config
from discomm_lite.training.untrusted import (
    CheckpointError,
    check_payload,
    read_pickle,
    runs_code,
    unreadable,
    unusual_imports,
)

# 2: the NumPy and Python RNG states as tensors and lists (issue 15). 1 held NumPy's as a NumPy
# array; such a file is read by the same restricted reader with NumPy's array type allowed (data,
# no code: the globals below), and its RNG state converted.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_FORMAT_1_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType,
                     (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
_PLAIN = (type(None), bool, int, float, str)
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

    The file's size, entries, checksums and pickle are checked first (`untrusted.read_pickle`),
    then it is read with `weights_only=True`: a file holding other Python objects (a pickle that
    would run code) is refused before any of it is created, with the globals it would have
    imported. Its values are checked before they are used (`untrusted.check_payload`).
    """
    path = Path(path).expanduser()
    if path.is_symlink() and not path.exists():
        raise CheckpointError(f"{path} is a symbolic link to nothing (its target is missing, or "
                              "it loops through links): point it at a checkpoint.")
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}: check the path (a run's folder holds "
                              "checkpoint.pt once its first epoch has finished).")
    data = read_pickle(path)
    try:
        with torch.serialization.safe_globals(_FORMAT_1_GLOBALS):
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # also what the weights_only reader raises on refusal
        unusual = unusual_imports(pickle_imports(data))
        raise (runs_code(path, unusual) if unusual else unreadable(path, e)) from None
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise unreadable(path, e) from e
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        what = (f"a dict with the keys {sorted(shown(k, 40) for k in islice(payload, 50))[:8]}"
                if isinstance(payload, dict) else f"a {type(payload).__name__}")
        raise CheckpointError(f"{path} is not a discomm_lite checkpoint: it holds {what}, "
                              f"which lacks {missing}.")
    check_payload(payload, path)
    if payload["format_version"] not in READABLE_FORMATS:
        raise CheckpointError(f"{path} has format version {payload['format_version']}; this "
                              f"version of discomm_lite reads versions {READABLE_FORMATS}.")
    if payload["format_version"] == 1:
        payload["rng"] = _rng_of_format_1(payload["rng"])
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
    # A value of another type differs, whatever it holds: no comparison runs on an unknown type.
    differ = {k: (saved.get(k), current[k]) for k in current if k not in RESUMABLE_CHANGES
              and not (type(saved.get(k)) in _PLAIN and saved.get(k) == current[k])}
    if differ:
        lines = ", ".join(f"{k}: checkpoint {shown(a, 60)} vs now {shown(b, 60)}" for k, a, b in
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
    `evaluate_checkpoint` and a run's `pretrained` start all use it). The recorded configuration
    must be valid and name a backbone built from local code (`rebuild.checkpoint_config`), and
    the saved shapes must be its model's before it is built (`build_saved_model`). Building the
    model does not move the caller's random number generator.

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
    where = "the checkpoint" if isinstance(checkpoint, dict) else Path(checkpoint)
    return build_saved_model(payload, which, checkpoint_config(payload, where), where)


def build_saved_model(payload: dict, which: str, config: Config,
                      where: Path | str = "the checkpoint") -> MultiCropModel:
    """`config`'s model holding the checkpoint's `which` weights, built once their shapes were
    found to be the model's on the meta device (nothing allocated: a `head_hidden_dim = 40000`
    over a 64-wide head is refused before its 8 GB are); CheckpointError for NaN or inf."""
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                expected = {k: tuple(v.shape) for k, v in make_model(config).state_dict().items()}
        except Exception:  # a model the meta device cannot build (some timm models): no pre-check
            expected = None
        if expected is not None:
            check_shapes(expected, payload[which], f"{which}'s weights", where)
        model = make_model(config)
    model.load_state_dict(payload[which])
    bad = non_finite_tensors(model.state_dict().items())
    if bad:
        prefix = f"{where}: " if isinstance(where, Path) else ""
        raise CheckpointError(
            f"{prefix}the {which}'s {bad[0]} holds NaN or inf values"
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
