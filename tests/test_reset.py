"""The head reset (training/reset.py): the schedule after it, its health record, its warning."""

import pytest

from discomm_lite.training.monitor import ChannelCollapseWarning
from discomm_lite.training.reset import (
    RESET_COLLAPSED,
    head_lr_and_momentum,
    reset_collapse_warning,
    reset_health,
)


def test_the_new_heads_lr_ramps_up_and_the_teacher_head_catches_up_for_its_steps():
    options = dict(warmup_steps=4, catchup_steps=2, catchup_momentum=0.9)
    got = [head_lr_and_momentum(since, 8e-3, 0.99, **options) for since in range(6)]
    assert [lr for lr, _ in got] == pytest.approx([2e-3, 4e-3, 6e-3, 8e-3, 8e-3, 8e-3])
    assert [m for _, m in got] == [0.9, 0.9, 0.99, 0.99, 0.99, 0.99]
    # before any reset, and without warm-up or catch-up: the schedule's values
    assert head_lr_and_momentum(None, 8e-3, 0.99, **options) == (8e-3, 0.99)
    assert head_lr_and_momentum(0, 8e-3, 0.99, warmup_steps=0, catchup_steps=5,
                                catchup_momentum=None) == (8e-3, 0.99)


def _train(step, rate, agreement=0.6):
    return {"kind": "train", "step": step, "coding_rate": rate, "bit_agreement": agreement}


RECORDS = [_train(8, 100.0), _train(10, 120.0, 0.62), {"kind": "reinit", "step": 10, "epoch": 1},
           _train(12, 40.0, 0.55), _train(14, 90.0, 0.58), _train(16, 111.0, 0.61),
           _train(18, 130.0, 0.63)]


def test_reset_health_reads_the_rate_before_its_low_and_its_recovery():
    health = reset_health(RECORDS, step=18)
    assert health == {
        "kind": "reset_health", "step": 18, "reset_step": 10, "coding_rate_before": 120.0,
        "bit_agreement_before": 0.62, "coding_rate_min": 40.0, "coding_rate_min_step": 12,
        "bit_agreement_min": 0.55, "coding_rate_end": 130.0,
        "steps_to_recover": 6}  # 111 >= 0.9 x 120 first at step 16
    # never back to 90 %: no step count; no reset, or no coding rate (DINO): no record
    assert reset_health(RECORDS[:5], step=14)["steps_to_recover"] is None
    assert reset_health(RECORDS[:2], step=10) is None
    dino = [{"kind": "reinit", "step": 0, "epoch": 0}, {"kind": "train", "step": 2, "loss": 1.0}]
    assert reset_health(dino, step=2) is None


def test_a_rate_under_half_its_value_before_the_reset_warns_once():
    assert RESET_COLLAPSED == 0.5
    healthy = RECORDS[:3] + [_train(12, 61.0)]  # 61 > 0.5 x 120
    assert reset_collapse_warning(healthy) is None
    collapsed = RECORDS[:4]
    with pytest.warns(ChannelCollapseWarning, match=r"reset at step 10 collapsed.*40\.0.*120\.0"):
        warning = reset_collapse_warning(collapsed)
    assert (warning["kind"], warning["step"], warning["reset_step"]) == ("warning", 12, 10)
    assert reset_collapse_warning([*collapsed, warning, _train(14, 30.0)]) is None  # once
