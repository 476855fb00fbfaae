"""The head reset (paper Sec. 4.5): the student head drawn again every `reinit_every` epochs.

What the paper leaves open is decided here, each choice a Config field measured by the reset study
(studies/README.md, resets): what the reset does to the head's AdamW moments (`reinit_head`), the
new head's learning-rate warm-up and the teacher head's catch-up momentum after it
(`head_lr_and_momentum`). Every reset is then checked: a "reset_health" record at the end of its
period (`reset_health`), and a warning as soon as the coding rate falls below half its value
before the reset (`reset_collapse_warning`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from discomm_lite.models.model import MultiCropModel
from discomm_lite.training.monitor import ChannelCollapseWarning

RESET_RECOVERED = 0.9  # the coding rate is back once it reaches this fraction of its value before
RESET_COLLAPSED = 0.5  # below this fraction of its value before, a reset collapsed the channel


def reinit_head(student: MultiCropModel, teacher: MultiCropModel,
                optimizer: torch.optim.Optimizer, *, policy: str, seed: int,
                clear_optimizer_state: bool) -> None:
    """Re-sample the student head, apply the teacher policy and, if asked, clear its AdamW state.

    The paper's periodically randomized heads (Sec. 4.5): the head is drawn again from its
    initial distribution every `reinit_every` epochs.

    policy "copy": the teacher head becomes the new student head, so teacher and student speak
    the same (new) code from the first step, as at the start of training; "keep": the teacher
    keeps its EMA head and drifts to the new code at the EMA's pace.
    `clear_optimizer_state`: drop the head's AdamW moments and step count (False: keep them, as
    an in-place re-initialisation of the modules would). Either way a fresh head at a toy run's
    full lr can collapse the channel within ten steps: a (bias-corrected or old-scaled) Adam step
    moves each weight by about lr, 0.4 of the head's init std of 0.02 at cifar-toy's 8e-3, in
    nearly one direction, so its outputs grow large and low-rank. The head's lr warm-up
    (`head_lr_and_momentum`) prevents it (studies/README.md, the reset study).
    `seed` fixes the new head, so a resumed run and every process draw the same one.
    """
    if policy not in ("copy", "keep"):
        raise ValueError(f"policy must be 'copy' or 'keep', got {policy!r}.")
    devices = [p.device for p in student.head.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        student.head.reset_parameters()
    if clear_optimizer_state:
        for p in student.head.parameters():
            optimizer.state.pop(p, None)
    if policy == "copy":
        teacher.head.load_state_dict(student.head.state_dict())


def head_lr_and_momentum(since: int | None, lr: float, momentum: float, *, warmup_steps: int,
                         catchup_steps: int, catchup_momentum: float | None
                         ) -> tuple[float, float]:
    """The head's lr and the teacher head's EMA momentum, `since` steps after a head reset.

    The new head's lr ramps linearly from lr / warmup_steps to lr over its first `warmup_steps`
    steps, as the whole network's did at the start of the run; for `catchup_steps` steps the
    teacher head follows the student's at `catchup_momentum` instead of the schedule's
    `momentum`. Before the first reset (`since` None), and after those steps, both are the
    schedule's.
    """
    if since is None:
        return lr, momentum
    if since < warmup_steps:
        lr = lr * (since + 1) / warmup_steps
    if since < catchup_steps and catchup_momentum is not None:
        momentum = catchup_momentum
    return lr, momentum


def _last_reset(records: Sequence[dict]) -> tuple[dict | None, dict | None, list[dict]]:
    """The last head reset of `records`, the train record just before it and those after it."""
    index = next((i for i in range(len(records) - 1, -1, -1)
                  if records[i]["kind"] == "reinit"), None)
    if index is None:
        return None, None, []
    before = next((r for r in reversed(records[:index]) if r["kind"] == "train"), None)
    after = [r for r in records[index + 1:] if r["kind"] == "train"]
    return records[index], before, after


def reset_health(records: Sequence[dict], step: int) -> dict | None:
    """The "reset_health" record of the last head reset in `records`, at the end of its period.

    The coding rate and bit agreement of the train record just before the reset, their minimum
    over the records after it, the rate at the end, and the steps until the rate was back to
    RESET_RECOVERED of its value before (None if it never was). None without a reset, or for a
    method whose records have no coding rate.
    """
    reset, before, after = _last_reset(records)
    if reset is None or not after or "coding_rate" not in after[0]:
        return None
    rate_before = None if before is None else before["coding_rate"]
    lowest = min(after, key=lambda r: r["coding_rate"])
    recovered = next((r["step"] - reset["step"] for r in after if rate_before is not None
                      and r["coding_rate"] >= RESET_RECOVERED * rate_before), None)
    agreement = [r["bit_agreement"] for r in after if "bit_agreement" in r]
    return {"kind": "reset_health", "step": step, "reset_step": reset["step"],
            "coding_rate_before": rate_before,
            "bit_agreement_before": None if before is None else before.get("bit_agreement"),
            "coding_rate_min": lowest["coding_rate"], "coding_rate_min_step": lowest["step"],
            "bit_agreement_min": min(agreement) if agreement else None,
            "coding_rate_end": after[-1]["coding_rate"], "steps_to_recover": recovered}


def reset_collapse_warning(records: Sequence[dict]) -> dict | None:
    """Warn (once per reset) when the coding rate since the last head reset fell below
    RESET_COLLAPSED of its value just before the reset; returns the "warning" record."""
    reset, before, after = _last_reset(records)
    if reset is None or before is None or not after or "coding_rate" not in before:
        return None
    if any(r["kind"] == "warning" and r.get("reset_step") == reset["step"] for r in records):
        return None
    rate, limit = after[-1]["coding_rate"], RESET_COLLAPSED * before["coding_rate"]
    if rate >= limit:
        return None
    message = (f"The head reset at step {reset['step']} collapsed the channel: coding rate "
               f"{rate:.1f} at step {after[-1]['step']}, under half its {before['coding_rate']:.1f}"
               " just before the reset. Warm the new head's lr up for longer "
               "(reinit_warmup_steps), or lower lr.")
    warnings.warn(message, ChannelCollapseWarning, stacklevel=3)
    return {"kind": "warning", "step": after[-1]["step"], "reset_step": reset["step"],
            "message": message}
