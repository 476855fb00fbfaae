"""Schedules, table-driven against their closed forms; the head re-init calendar."""

import math

import pytest

from discomm_lite.method.dino import teacher_temperature
from discomm_lite.training import schedules


@pytest.mark.parametrize("step,total,start,end,expected", [
    (0, 100, 1.0, 0.0, 1.0),
    (50, 100, 1.0, 0.0, 0.5),
    (100, 100, 1.0, 0.0, 0.0),
    (250, 100, 1.0, 0.0, 0.0),
    (25, 100, 0.996, 1.0, 1.0 + 0.5 * (0.996 - 1.0) * (1 + math.cos(math.pi / 4))),
    (0, 0, 3.0, 2.0, 2.0),
])
def test_cosine(step, total, start, end, expected):
    assert schedules.cosine(step, total, start, end) == pytest.approx(expected)


@pytest.mark.parametrize("step,expected", [
    (0, 0.0), (5, 0.5e-3), (10, 1e-3), (55, 1e-5 + 0.5 * (1e-3 - 1e-5)), (100, 1e-5),
])
def test_warmup_cosine(step, expected):
    assert schedules.warmup_cosine(step, 100, 10, 1e-3, 1e-5) == pytest.approx(expected)


@pytest.mark.parametrize("step,expected", [(0, 0.04), (15, 0.055), (30, 0.07), (99, 0.07)])
def test_dinos_teacher_temperature_ramps_linearly_then_holds(step, expected):
    assert teacher_temperature(step, 30, 0.04, 0.07) == pytest.approx(expected)


@pytest.mark.parametrize("every,at_start,due", [
    (0, False, []), (10, False, [10, 20, 30]), (3, False, [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]),
    (0, True, [0]), (10, True, [0, 10, 20, 30]),
])
def test_reinit_calendar(every, at_start, due):
    # The paper's BITS-reset: n = 10 in 100 epochs; "re-initialised once at the start" adapts.
    assert [e for e in range(31) if schedules.reinit_due(e, every, at_start)] == due


@pytest.mark.parametrize("every,epochs,partial,due", [
    (10, 100, False, [10, 20, 30, 40, 50, 60, 70, 80, 90]),  # the paper's: every period ends
    (2, 5, True, [2, 4]), (2, 5, False, [2]), (1, 5, False, [1, 2, 3, 4]),
    (3, 5, True, [3]), (3, 5, False, []), (4, 8, False, [4]),
])
def test_a_reset_whose_period_cannot_end_is_skipped_unless_asked(every, epochs, partial, due):
    assert [e for e in range(epochs) if schedules.reinit_due(e, every, False, epochs,
                                                             partial)] == due


@pytest.mark.parametrize("every,at_start,epochs,partial", [
    (0, False, 6, True), (0, True, 6, True), (2, False, 7, True), (2, False, 7, False),
    (3, True, 10, False), (1, False, 4, True),
])
def test_last_reinit_epoch_is_the_calendars_latest_reset(every, at_start, epochs, partial):
    for epoch in range(epochs):
        due = [e for e in range(epoch + 1)
               if schedules.reinit_due(e, every, at_start, epochs, partial)]
        expected = due[-1] if due else None
        assert schedules.last_reinit_epoch(epoch, every, at_start, epochs, partial) == expected
