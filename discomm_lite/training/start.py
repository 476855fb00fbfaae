"""Where a run starts: a new run folder, the checkpoint of an interrupted run, or another run's
checkpoint (`pretrained`, the paper's Table 8 adaptation).

A checkpoint to resume is checked against the run before any of it is used (`check_resumable`):
its step lies within the run, its tensors have the shapes of the run's, and it was trained on
the data the run finds. A folder is written only once recognised as a run folder
(`check_run_folder`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from discomm_lite import distributed
from discomm_lite.config import Config
from discomm_lite.config.checks import shown
from discomm_lite.data.fingerprint import same_data
from discomm_lite.method import Method, MethodState
from discomm_lite.models.model import MultiCropModel
from discomm_lite.training import runlog
from discomm_lite.training.checkpoint import (
    build_saved_model,
    load_checkpoint,
    set_rng_state,
)
from discomm_lite.training.rebuild import check_shapes, checkpoint_config
from discomm_lite.training.runlock import LOCK_FILE
from discomm_lite.training.untrusted import CheckpointError

if TYPE_CHECKING:  # annotations only: setup builds a new run's state with start_from_pretrained
    from discomm_lite.training.setup import TrainState

CHECKPOINT_FILE = "checkpoint.pt"


class RunFolderError(RuntimeError):
    """The run folder holds a run's records but not its checkpoint: continuing would wipe them."""


class NotARunFolder(RunFolderError, ValueError):
    """`out_dir` names a folder that is no run's (or a filesystem root, or the home folder)."""


class DataChangedWarning(UserWarning):
    """A resumed run's training images differ from the checkpoint's (same size, classes and
    labels): another copy or decoding of its dataset."""


def resume_or_start(state: TrainState, config: Config, method: Method, out: Path | None,
                    device: torch.device, *, total_steps: int,
                    data: dict | None = None) -> list[dict]:
    """Load `out`'s checkpoint into `state` and return the records up to its step; [] if new.

    The checkpoint is checked against the run first (`check_resumable`: a run of `total_steps`
    steps on the data of fingerprint `data`). A new run folder gets config.json and an empty
    metrics.jsonl. A folder whose metrics.jsonl holds records but which has no checkpoint is
    refused (RunFolderError), not wiped.
    """
    if out is None:
        return []
    metrics, checkpoint = out / runlog.METRICS_FILE, out / CHECKPOINT_FILE
    if checkpoint.exists():
        payload = load_checkpoint(checkpoint, config, map_location=device)
        check_resumable(payload, state, method, total_steps, data, checkpoint)
        try:
            state.load_state_dict(payload, method)
            set_rng_state(payload["rng"])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            text = str(err).strip().splitlines()
            raise CheckpointError(f"{checkpoint} cannot be resumed: its state does not load "
                                  f"({type(err).__name__}: {text[0][:200] if text else ''}). "
                                  "The file was edited or damaged; use an earlier checkpoint."
                                  ) from err
        if distributed.is_main_process():
            runlog.truncate_after(metrics, state.step)  # what follows will be written again
        distributed.barrier()  # the other processes read metrics.jsonl once rank 0 rewrote it
        return runlog.read(metrics)
    records = runlog.read(metrics)
    if records:
        raise RunFolderError(
            f"{out} holds a run's metrics ({len(records)} records in {metrics}, up to step "
            f"{records[-1]['step']}) but no {CHECKPOINT_FILE}: that run stopped before its first "
            f"checkpoint, or its checkpoint was moved or deleted. To continue it, put its "
            f"{CHECKPOINT_FILE} back into {out}; to start afresh there, delete {metrics} (its "
            "records are lost then); or give this run another folder.")
    if distributed.is_main_process():
        runlog.start(metrics)
        config.save(out / "config.json")
    return []


def check_resumable(payload: dict, state: TrainState, method: Method, total_steps: int,
                    data: dict | None, path: Path) -> None:
    """Refuse (CheckpointError) a checkpoint that this run cannot continue, before any of it is
    used: other training data than the run's fingerprint `data` (another size, classes or labels;
    a DataChangedWarning when only the pixels differ: another copy of the dataset), a step
    beyond the run's `total_steps` (a step of 10**12 would report a finished run that trained
    nothing), tensors of other shapes than the run's models and method state. The step is a
    plain int >= 0 already (`untrusted.check_payload`)."""
    differ, pixels_differ = same_data(payload.get("data"), data) if data else ([], False)
    if differ:
        raise CheckpointError(
            f"{path} was trained on other data than the run finds now (its "
            f"{', '.join(differ)} differ: {data['images']:,} images found): a resumed run must "
            "see the data it started on. Point data_root (or DISCOMM_DATA) at that data, or "
            "start a new run in another folder with pretrained set to this checkpoint.")
    if pixels_differ:
        warnings.warn(
            f"The training images differ from those {path} was trained on (the same number, "
            "classes and labels; another copy or decoding of the dataset): the run continues "
            "on the images it finds now.", DataChangedWarning, stacklevel=4)
    if payload["step"] > total_steps:
        raise CheckpointError(
            f"{path} holds step {payload['step']:,}, but this run has {total_steps:,} steps in "
            "all: it was not written by this run (or the training set changed size). Give "
            "this run another folder, or resume the run that wrote it.")
    for which in ("student", "teacher"):
        expected = {k: tuple(v.shape) for k, v in getattr(state, which).state_dict().items()}
        check_shapes(expected, payload[which], f"{which}'s weights", path)
    _check_optimizer_steps(payload, path)
    try:
        saved_state = method.saved_state(payload)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} holds no valid state of method {method.name!r} "
                              f"({type(err).__name__}).") from None
    check_shapes({k: tuple(v.shape) for k, v in state.method_state.items()}, saved_state,
                 f"{method.name} state tensors", path)


def _check_optimizer_steps(payload: dict, path: Path) -> None:
    """Refuse an optimizer state whose per-parameter step counts are not single numbers between
    0 and the checkpoint's step (AdamW's bias correction divides by 1 - beta ** step)."""
    optimizer = payload["optimizer"]
    states = optimizer.get("state", {}) if isinstance(optimizer, dict) else None
    if not isinstance(states, dict):
        raise CheckpointError(f"{path} holds an optimizer state of type "
                              f"{type(optimizer).__name__}, not AdamW's dict.")
    for key, state in states.items():
        step = state.get("step") if isinstance(state, dict) else None
        value = step.item() if isinstance(step, torch.Tensor) and step.numel() == 1 else step
        if step is not None and not (isinstance(value, int | float)
                                     and 0 <= value <= payload["step"]):
            raise CheckpointError(
                f"{path} holds an optimizer step of {shown(step, 40)} for parameter "
                f"{shown(key, 20)}, outside 0 .. the checkpoint's step {payload['step']:,}: the "
                "file was edited or damaged.")


def check_run_folder(out: Path) -> None:
    """Refuse (NotARunFolder) to write `out` unless it is new, empty or a run folder.

    A run writes config.json, metrics.jsonl and checkpoint.pt there, replacing files of those
    names: a filesystem root, the home folder, a file, and a non-empty folder that holds none
    of a run's marks are refused. A run's marks: a config.json recording a discomm_lite Config,
    a metrics.jsonl of run records (or empty), a checkpoint.pt (read and checked before use),
    a run.lock, or what discomm_lite puts there before the run starts: a sweep's execution.log,
    the smoke setting's imagefolder/ (`teach.gpu_stage.smoke_image_folder`).
    """
    resolved = out.expanduser().resolve()
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no home folder known (no $HOME, no password entry)
        home = None
    if resolved == resolved.parent or resolved == home:
        where = "a filesystem root" if resolved == resolved.parent else "your home folder"
        raise NotARunFolder(
            f"The run folder {out} is {where}: a run writes config.json, metrics.jsonl and "
            "checkpoint.pt into its folder. Give it a folder of its own (e.g. runs/<name>).")
    if resolved.exists() and not resolved.is_dir():
        raise NotARunFolder(f"The run folder {out} is a file, not a folder: give the run a "
                            "folder of its own.")
    if not resolved.is_dir() or not any(resolved.iterdir()):
        return
    marks = ((_records_a_config(resolved / "config.json"), "config.json"),
             (_holds_run_records(resolved / runlog.METRICS_FILE), runlog.METRICS_FILE),
             *(((resolved / name).exists(), name)
               for name in (CHECKPOINT_FILE, LOCK_FILE, "execution.log", "imagefolder")))
    if any(found for found, _ in marks):
        return
    entries = sorted(p.name for p in resolved.iterdir())
    listed = ", ".join(shown(name, 40) for name in entries[:4]) + (", ..." if len(entries) > 4
                                                                 else "")
    foreign = [name for _, name in marks[:2] if (resolved / name).exists()]
    why = (f"its {' and '.join(foreign)} {'are' if len(foreign) > 1 else 'is'} not a run's"
           if foreign else "it holds no config.json, metrics.jsonl or checkpoint.pt of a run")
    raise NotARunFolder(
        f"The run folder {out} is not empty and not a discomm_lite run folder ({why}; it "
        f"holds {listed}): a run would write config.json, metrics.jsonl and checkpoint.pt "
        "there, replacing files of those names. Give the run a new or empty folder.")


def _records_a_config(path: Path) -> bool:
    """Whether `path` is a JSON object with the fields every Config has had."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(values, dict) and {"method", "n_bits", "backbone"} <= values.keys()


def _holds_run_records(path: Path) -> bool:
    """Whether `path` is an empty file or one whose first line is a run record (kind, step)."""
    try:
        with path.open("rb") as f:
            first = f.readline(2**16)
        record = json.loads(first) if first.strip() else {"kind": "", "step": 0}
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and {"kind", "step"} <= record.keys()


def start_from_pretrained(student: MultiCropModel, config: Config,
                          method: Method) -> MethodState:
    """Start the student from the teacher of `config.pretrained`, as a continued run would.

    The backbone always; the head too unless `reinit_at_start` (the loop then draws a fresh one
    at epoch 0), which the paper's Table 8 adaptation needs for BITS-fixed, DINO and SimDINO.
    Returns the checkpoint's method state (DINO's: see `method.dino`) when its head is loaded into
    a run of the same method, else {}.
    """
    path = Path(config.pretrained)
    payload = load_checkpoint(path)
    saved = payload["config"]  # plain values (untrusted.check_payload)
    if saved.get("backbone") != config.backbone:
        raise ValueError(
            f"Config.pretrained = {config.pretrained!r} holds a {shown(saved.get('backbone'))} "
            f"backbone but Config.backbone = {config.backbone!r}: set backbone to match."
        )
    # The backbone is the run's own, so a timm hub backbone is the user's choice here.
    source = build_saved_model(payload, "teacher",
                               checkpoint_config(payload, path, local_backbone=False), path)
    student.backbone.load_state_dict(source.backbone.state_dict())
    if config.reinit_at_start:
        return {}
    head = source.head.state_dict()
    expected = student.head.state_dict()
    shapes = {k: tuple(v.shape) for k, v in head.items()}
    wanted = {k: tuple(v.shape) for k, v in expected.items()}
    if shapes != wanted:
        differ = sorted(k for k in shapes.keys() | wanted.keys() if shapes.get(k) != wanted.get(k))
        described = "; ".join(f"{k}: checkpoint {shapes.get(k)} vs run {wanted.get(k)}"
                              for k in differ[:4])
        settings = ", ".join(f"{k}={shown(saved.get(k), 40)}" for k in (
            "method", "n_bits", "head_hidden_dim", "head_norm", "n_prototypes",
            "head_bottleneck_dim"))
        raise ValueError(
            f"Config.pretrained = {config.pretrained!r} holds a head that does not fit this "
            f"run's ({described}); it was built with {settings}. Set reinit_at_start=True to "
            "start from a fresh head, or give the run those head settings to continue with it."
        )
    student.head.load_state_dict(head)
    return method.saved_state(payload) if saved["method"] == config.method else {}
