"""EMA edge cases and the formula."""

import copy

import torch
from torch import nn

from discomm_lite.training.ema import ema_update


def _pair():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.data.normal_()
    teacher[1].running_mean.fill_(7.0)
    return student, teacher


def test_momentum_zero_copies_the_student():
    student, teacher = _pair()
    ema_update(teacher, student, 0.0)
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        assert torch.equal(t, s)


def test_momentum_one_keeps_the_teacher():
    student, teacher = _pair()
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)
    for t, b in zip(teacher.parameters(), before, strict=True):
        assert torch.equal(t, b)


def test_formula_and_buffers_stay_the_teachers():
    student, teacher = _pair()
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for t, b, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    assert torch.all(teacher[1].running_mean == 7.0)
