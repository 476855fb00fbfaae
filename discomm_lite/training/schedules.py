"""Schedules as pure functions of the global step, so a resumed run continues exactly.

DINO precomputes the same curves per step (facebookresearch/dino utils.cosine_scheduler); lightly
writes them as `step -> value` functions, as here.
"""

from __future__ import annotations

import math


def cosine(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from `start` at step 0 to `end` at `total_steps` (held at `end` after)."""
    if total_steps <= 0 or step >= total_steps:
        return end
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * step / total_steps))


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float, end: float,
                  start: float = 0.0) -> float:
    """Linear warmup from `start` to `peak` over `warmup_steps`, then cosine to `end`."""
    if step < warmup_steps:
        return start + (peak - start) * step / warmup_steps
    return cosine(step - warmup_steps, total_steps - warmup_steps, peak, end)


def reinit_due(epoch: int, reinit_every: int, reinit_at_start: bool = False,
               epochs: int | None = None, partial_period: bool = True) -> bool:
    """Whether the student head is re-initialised at the start of `epoch` (0-based; paper Sec. 4.5).

    Every `reinit_every` epochs (never at epoch 0, where the head is fresh anyway), and once at
    epoch 0 when `reinit_at_start` asks for it (adapting a pretrained checkpoint). With the run's
    `epochs` and `partial_period=False`, a periodic reset whose period would not end before the
    run does is skipped: the paper's calendar (n = 10 of 100 epochs) never has one, and the final
    codes are then those of a head that had a whole period to learn.
    """
    if epoch == 0:
        return reinit_at_start
    if reinit_every <= 0 or epoch % reinit_every:
        return False
    return partial_period or epochs is None or epoch + reinit_every <= epochs


def last_reinit_epoch(epoch: int, reinit_every: int, reinit_at_start: bool = False,
                      epochs: int | None = None, partial_period: bool = True) -> int | None:
    """The latest epoch <= `epoch` whose start re-initialised the head (None: no reset yet).

    A pure function of the calendar of `reinit_due`, so a resumed run knows how far it is into
    the period of the last reset (the head's warm-up, the teacher head's catch-up).
    """
    if reinit_every > 0:
        last = epoch - epoch % reinit_every
        while last > 0 and not reinit_due(last, reinit_every, reinit_at_start, epochs,
                                          partial_period):
            last -= reinit_every
        if last > 0:
            return last
    return 0 if reinit_at_start else None
