"""Losses against naive references: explicit loops, float64 logdet, the paper's formulas."""

import math

import pytest
import torch

from discomm_lite.method import coding_rate as rate_maths
from discomm_lite.method import dino, losses


def _views(n_views, n, k, seed, scale=2.0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, k, generator=g) * scale).requires_grad_(requires_grad)
            for _ in range(n_views)]


def _naive_bce(student, teacher, soft_temperature=None):
    """Explicit loops over view pairs, samples and bits, in float64."""
    total, pairs = 0.0, 0
    for g, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == g:
                continue
            acc = 0.0
            for i in range(s.shape[0]):
                for j in range(s.shape[1]):
                    x = float(s[i, j])
                    if soft_temperature is None:
                        y = 1.0 if float(t[i, j]) > 0 else 0.0
                    else:
                        y = 1 / (1 + math.exp(-float(t[i, j]) / soft_temperature))
                    p = 1 / (1 + math.exp(-x))
                    acc -= y * math.log(p) + (1 - y) * math.log(1 - p)
            total += acc / (s.shape[0] * s.shape[1])
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("n_views,n_teacher,n,k", [(2, 2, 4, 3), (3, 2, 5, 8), (6, 2, 3, 4),
                                                    (4, 1, 2, 5), (3, 3, 3, 2)])
def test_bce_agreement_matches_naive_loop(n_views, n_teacher, n, k):
    student = _views(n_views, n, k, seed=n_views * 10 + k)
    teacher = _views(n_teacher, n, k, seed=99 + n)
    got = losses.bce_agreement(student, teacher)
    assert got.item() == pytest.approx(_naive_bce(student, teacher), rel=1e-5)


@pytest.mark.parametrize("temperature", [0.05, 0.2, 1.0])
def test_soft_targets_match_naive_loop(temperature):
    student, teacher = _views(3, 4, 6, seed=1), _views(2, 4, 6, seed=2)
    got = losses.bce_agreement(student, teacher, targets="soft", temperature=temperature)
    assert got.item() == pytest.approx(_naive_bce(student, teacher, temperature), rel=1e-5)


def test_two_views_is_paper_eq8_up_to_one_over_2k():
    # Eq. 8: sum over bits of BCE(s2 | z1) + BCE(s1 | z2), averaged over the batch.
    s1, s2 = _views(2, 7, 16, seed=3)
    t1, t2 = _views(2, 7, 16, seed=4)
    eq8 = 0.0
    for s, t in ((s2, t1), (s1, t2)):
        z = (t > 0).double()
        p = torch.sigmoid(s.double())
        eq8 += (-(z * p.log() + (1 - z) * (1 - p).log())).sum(1).mean()
    k = 16
    got = losses.bce_agreement([s1, s2], [t1, t2])
    assert got.item() == pytest.approx(eq8.item() / (2 * k), rel=1e-6)


def test_teacher_receives_no_gradient_and_student_does():
    student = _views(3, 4, 5, seed=5, requires_grad=True)
    teacher = _views(2, 4, 5, seed=6, requires_grad=True)
    for agreement in ("bce", "cosine"):
        loss, _ = losses.bits_loss(student, teacher, agreement=agreement)
        loss.backward()
        assert all(t.grad is None for t in teacher)
        assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
        for s in student:
            s.grad = None


def test_cosine_agreement_matches_formula():
    student, teacher = _views(3, 5, 6, seed=7), _views(2, 5, 6, seed=8)
    total, pairs = 0.0, 0
    for g, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == g:
                continue
            signs = torch.where(t > 0, 1.0, -1.0).double()
            cos = [float(s[i].double() @ signs[i] / (s[i].double().norm() * signs[i].norm()))
                   for i in range(s.shape[0])]
            total += 1 - sum(cos) / len(cos)
            pairs += 1
    got = losses.cosine_agreement(student, teacher)
    assert got.item() == pytest.approx(total / pairs, rel=1e-5)


def _naive_coding_rate(z, eps):
    z = z.double()
    n, k = z.shape
    rows = [z[i] / math.sqrt(sum(float(x) ** 2 for x in z[i])) for i in range(n)]
    gram = sum(torch.outer(r, r) for r in rows)
    matrix = torch.eye(k, dtype=torch.float64) + k / (n * eps) * gram
    sign, logabsdet = torch.linalg.slogdet(matrix)
    assert sign > 0
    return 0.5 * logabsdet.item()


@pytest.mark.parametrize("n,k,eps", [(8, 4, 0.05), (3, 16, 0.05), (64, 32, 0.5), (20, 20, 0.01)])
def test_coding_rate_matches_float64_logdet(n, k, eps):
    z = _views(1, n, k, seed=n + k)[0]
    assert rate_maths.coding_rate(z, eps).item() == pytest.approx(_naive_coding_rate(z, eps),
                                                               rel=1e-4)


def test_coding_rate_ignores_row_scale_and_reaches_collapse_value():
    z = _views(1, 10, 8, seed=11)[0]
    scaled = z * torch.rand(10, 1) * 100
    assert rate_maths.coding_rate(scaled).item() == pytest.approx(rate_maths.coding_rate(z).item(),
                                                              rel=1e-4)
    # Every row pointing the same way: Gram = N u u^T, so 0.5 log(1 + K / eps).
    same = torch.randn(1, 8).repeat(10, 1) * torch.rand(10, 1)
    assert rate_maths.coding_rate(same, 0.05).item() == pytest.approx(0.5 * math.log(1 + 8 / 0.05),
                                                                  rel=1e-4)


def test_coding_rate_of_nan_logits_is_nan():
    z = _views(1, 6, 4, seed=12)[0]
    z[2, 1] = float("nan")
    assert math.isnan(rate_maths.coding_rate(z).item())


def test_bits_loss_combines_terms_as_eq10():
    student, teacher = _views(4, 6, 8, seed=13), _views(2, 6, 8, seed=14)
    beta, eps = 0.3, 0.05
    loss, parts = losses.bits_loss(student, teacher, coding_rate_weight=beta, eps=eps)
    rate = (_naive_coding_rate(student[0], eps) + _naive_coding_rate(student[1], eps)) / 2
    gamma = (8 + 6) / (8 * 6)
    expected = _naive_bce(student, teacher) - beta * gamma * rate
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert parts["coding_rate"].item() == pytest.approx(rate, rel=1e-4)


def test_channel_statistics_on_constructed_codes():
    n, k = 8, 4
    teacher = torch.ones(n, k)
    teacher[:, 0] = -1  # bit 0 constant 0, bit 1 constant 1
    teacher[: n // 2, 2] = -1  # bit 2 fair: entropy 1
    teacher[:2, 3] = -1  # bit 3: p = 6/8
    student = [teacher.clone(), -teacher.clone()]  # view 1 agrees with teacher 0, view 0 not
    stats = losses.channel_statistics(student, [teacher, teacher])
    assert stats["constant_bits"].item() == pytest.approx(0.5)
    h = lambda p: -(p * math.log2(p) + (1 - p) * math.log2(1 - p))  # noqa: E731
    assert stats["bit_entropy"].item() == pytest.approx((0 + 0 + 1 + h(0.75)) / 4, abs=1e-5)
    # pairs (v=1, g=0): student -teacher vs teacher -> 0 agreement; (v=0, g=1): 1 agreement.
    assert stats["bit_agreement"].item() == pytest.approx(0.5)


def test_wrong_shapes_raise_value_error():
    good = _views(2, 4, 5, seed=15)
    with pytest.raises(ValueError, match="student_logits\\[1\\]"):
        losses.bce_agreement([good[0], torch.randn(4, 6)], good)
    with pytest.raises(ValueError, match="teacher views"):
        losses.bce_agreement(good, good + good)
    with pytest.raises(ValueError, match="at least"):
        losses.bce_agreement(good[:1], good[:1])
    with pytest.raises(ValueError, match="\\(N, K\\)"):
        rate_maths.coding_rate(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="agreement"):
        losses.bits_loss(good, good, agreement="l2")


def _naive_rate_of_rows(rows, eps, global_batch=None):
    """0.5 logdet(I + K / (N eps) R^T R) in float64, rows taken as given (no normalisation)."""
    rows = rows.double()
    n, k = rows.shape
    gram = sum(torch.outer(r, r) for r in rows)
    matrix = torch.eye(k, dtype=torch.float64) + k / ((global_batch or n) * eps) * gram
    return 0.5 * torch.linalg.slogdet(matrix)[1]


def _unit(x):
    x = x.double()
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("rate_input", ["student", "student_teacher_mean"])
def test_simdino_loss_matches_formula(rate_input):
    student, teacher = _views(3, 5, 6, seed=16), _views(2, 5, 6, seed=17)
    loss, parts = losses.simdino_loss(student, teacher, coding_rate_weight=1.0, eps=0.05,
                                      coding_rate_input=rate_input)
    align, pairs = 0.0, 0
    for g, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v != g:
                sn = s.double() / s.double().norm(dim=1, keepdim=True)
                tn = t.double() / t.double().norm(dim=1, keepdim=True)
                align += (0.5 * ((sn - tn) ** 2).sum(1)).mean().item()
                pairs += 1
    # SimDINO's calc_expansion: on s/|s| (--expa_type 0) or on (s/|s| + t/|t|) / 2 not
    # renormalised (--expa_type 1), for each global view g with the teacher's output on g.
    rows = [_unit(student[g]) if rate_input == "student" else (_unit(student[g]) + _unit(t)) / 2
            for g, t in enumerate(teacher)]
    rate = sum(_naive_rate_of_rows(r, 0.05).item() for r in rows) / 2
    expected = align / pairs - (6 + 5) / (6 * 5) * rate
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert parts["coding_rate"].item() == pytest.approx(rate, rel=1e-4)


def test_simdino_default_is_simdino_expa_type_1_and_teacher_gets_no_gradient():
    student = _views(3, 5, 6, seed=20, requires_grad=True)
    teacher = _views(2, 5, 6, seed=21, requires_grad=True)
    default, _ = losses.simdino_loss(student, teacher)
    mean, _ = losses.simdino_loss(student, teacher, coding_rate_input="student_teacher_mean")
    assert default.item() == mean.item()
    default.backward()
    assert all(t.grad is None for t in teacher)


def test_bits_loss_rate_on_student_teacher_mean_matches_formula():
    student, teacher = _views(3, 6, 8, seed=22), _views(2, 6, 8, seed=23)
    loss, parts = losses.bits_loss(student, teacher, coding_rate_weight=0.3,
                                   coding_rate_input="student_teacher_mean")
    rate = sum(_naive_rate_of_rows((_unit(student[g]) + _unit(t)) / 2, 0.05).item()
               for g, t in enumerate(teacher)) / 2
    expected = _naive_bce(student, teacher) - 0.3 * (8 + 6) / (8 * 6) * rate
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert parts["coding_rate"].item() == pytest.approx(rate, rel=1e-4)


def test_coding_rate_under_bf16_autocast_equals_float32_value_and_gradient():
    # Partly collapsed logits (rows near one direction), where the rate is most sensitive.
    g = torch.Generator().manual_seed(24)
    logits = torch.randn(1, 32, generator=g) * 3 + 0.3 * torch.randn(64, 32, generator=g)
    reference = logits.clone().requires_grad_(True)
    rate = rate_maths.coding_rate(reference, 0.05)
    rate.backward()
    cast = logits.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (cast.T @ cast).dtype == torch.bfloat16  # autocast is in force here
        rate_autocast = rate_maths.coding_rate(cast, 0.05)
        mean_rate = rate_maths.mean_coding_rate([cast, cast], [logits], 0.05,
                                            rate_input="student_teacher_mean")
    rate_autocast.backward()
    assert rate_autocast.dtype == torch.float32
    assert rate_autocast.item() == pytest.approx(rate.item(), rel=1e-4)
    torch.testing.assert_close(cast.grad, reference.grad, rtol=1e-4, atol=1e-7)
    expected_mean = _naive_rate_of_rows((_unit(logits) + _unit(logits)) / 2, 0.05).item()
    assert mean_rate.item() == pytest.approx(expected_mean, rel=1e-4)


def test_declared_global_batch_must_match_the_views():
    student, teacher = _views(2, 4, 5, seed=25), _views(2, 4, 5, seed=26)
    loss, _ = losses.bits_loss(student, teacher, global_batch=4)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="global_batch = 8 but 1 process"):
        losses.bits_loss(student, teacher, global_batch=8)
    with pytest.raises(ValueError, match="scope"):
        rate_maths.coding_rate(student[0], scope="local")
    with pytest.raises(ValueError, match="rate_input"):
        rate_maths.mean_coding_rate(student, teacher, 0.05, rate_input="teacher")


def test_dino_loss_and_center_match_formulas():
    student, teacher = _views(3, 4, 7, seed=18), _views(2, 4, 7, seed=19)
    center = torch.randn(1, 7) * 0.1
    loss, _ = dino.dino_loss(student, teacher, center=center, teacher_temp=0.04,
                               student_temp=0.1)
    total, pairs = 0.0, 0
    for g, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == g:
                continue
            for i in range(4):
                q = torch.softmax((t[i].double() - center[0].double()) / 0.04, 0)
                logp = torch.log_softmax(s[i].double() / 0.1, 0)
                total += -(q * logp).sum().item() / 4
            pairs += 1
    assert loss.item() == pytest.approx(total / pairs, rel=1e-5)
    new_center = dino.update_center(center, teacher, momentum=0.9)
    expected = 0.9 * center + 0.1 * torch.cat(teacher).mean(0, keepdim=True)
    torch.testing.assert_close(new_center, expected)
