"""Schedules, table-driven against their closed forms; the head re-init calendar."""

import math

import pytest

from discomm_lite import schedules


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
def test_linear_then_constant(step, expected):
    assert schedules.linear_then_constant(step, 30, 0.04, 0.07) == pytest.approx(expected)


@pytest.mark.parametrize("every,at_start,due", [
    (0, False, []), (10, False, [10, 20, 30]), (3, False, [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]),
    (0, True, [0]), (10, True, [0, 10, 20, 30]),
])
def test_reinit_calendar(every, at_start, due):
    # The paper's BITS-reset: n = 10 in 100 epochs; "re-initialised once at the start" adapts.
    assert [e for e in range(31) if schedules.reinit_due(e, every, at_start)] == due
