"""Where a run starts: a new run folder, the checkpoint of an interrupted run, or another run's
checkpoint (`pretrained`, the paper's Table 8 adaptation)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from discomm_lite import distributed
from discomm_lite.config import Config
from discomm_lite.method import Method, MethodState
from discomm_lite.models.model import MultiCropModel
from discomm_lite.training import runlog
from discomm_lite.training.checkpoint import load_checkpoint, load_model, set_rng_state

if TYPE_CHECKING:  # annotations only: setup builds a new run's state with start_from_pretrained
    from discomm_lite.training.setup import TrainState

CHECKPOINT_FILE = "checkpoint.pt"


class RunFolderError(RuntimeError):
    """The run folder holds a run's records but not its checkpoint: continuing would wipe them."""


def resume_or_start(state: TrainState, config: Config, method: Method, out: Path | None,
                    device: torch.device) -> list[dict]:
    """Load `out`'s checkpoint into `state` and return the records up to its step; [] if new.

    A new run folder gets config.json and an empty metrics.jsonl. A folder whose metrics.jsonl
    holds records but which has no checkpoint is refused (RunFolderError), not wiped.
    """
    if out is None:
        return []
    metrics, checkpoint = out / runlog.METRICS_FILE, out / CHECKPOINT_FILE
    if checkpoint.exists():
        payload = load_checkpoint(checkpoint, config, map_location=device)
        state.load_state_dict(payload, method)
        set_rng_state(payload["rng"])
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


def start_from_pretrained(student: MultiCropModel, config: Config,
                          method: Method) -> MethodState:
    """Start the student from the teacher of `config.pretrained`, as a continued run would.

    The backbone always; the head too unless `reinit_at_start` (the loop then draws a fresh one
    at epoch 0), which the paper's Table 8 adaptation needs for BITS-fixed, DINO and SimDINO.
    Returns the checkpoint's method state (DINO's: see `method.dino`) when its head is loaded into
    a run of the same method, else {}.
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
        return {}
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
    return method.saved_state(payload) if saved["method"] == config.method else {}
