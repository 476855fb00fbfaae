"""Information quantities of small codes (evaluation/information.py) against counting by hand."""

import itertools
import math
from collections import Counter

import pytest
import torch

from discomm_lite.evaluation import information as info


def _entropy(rows) -> float:
    counts = Counter(map(tuple, rows))
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _codes(seed: int, n: int = 300, k: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, k, generator=g) < 0.3).long()


def test_entropies_are_those_of_the_counted_messages():
    a, b = _codes(0), _codes(1)
    rows_a, rows_b = a.tolist(), b.tolist()
    assert info.code_entropy(a) == pytest.approx(_entropy(rows_a))
    joint = [x + y for x, y in zip(rows_a, rows_b, strict=True)]
    assert info.joint_entropy(a, b) == pytest.approx(_entropy(joint))
    assert info.conditional_entropy(a, b) == pytest.approx(_entropy(joint) - _entropy(rows_b))
    assert info.mutual_information(a, a) == pytest.approx(info.code_entropy(a))
    # all 2^K messages equally often: K bits
    every = torch.tensor(list(itertools.product((0, 1), repeat=5)))
    assert info.code_entropy(every) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        info.code_entropy(torch.full((3, 2), 2))


def test_the_cross_view_bce_bounds_the_conditional_entropy_from_above():
    g = torch.Generator().manual_seed(3)
    v1, v2 = info.two_view_logits(4000, 4, noise=0.7, generator=g)
    z1, z2 = (v1 > 0).long(), (v2 > 0).long()
    h = info.conditional_entropy(z1, z2)
    assert 0 < h < info.code_entropy(z1)
    for scale in (0.3, 1.0, 3.0, 10.0):  # predictors of z1 from view 2's message
        bound = info.cross_entropy_bits(z1, scale * (2 * z2.double() - 1))
        assert bound >= h - 1e-9
    # a predictor that ignores view 2 (p = 1/2 for every bit) pays 1 bit per bit: 4 bits
    coin = info.cross_entropy_bits(z1, torch.zeros(4000, 4, dtype=torch.float64))
    assert coin == pytest.approx(4.0)


def test_cross_entropy_bits_is_the_summed_per_bit_bce_in_bits():
    z = torch.tensor([[1, 0], [0, 0]])
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    p = torch.sigmoid(logits)
    by_hand = -(torch.log2(p[0, 0]) + torch.log2(1 - p[0, 1])
                + torch.log2(1 - p[1, 0]) + torch.log2(1 - p[1, 1])) / 2
    assert info.cross_entropy_bits(z, logits) == pytest.approx(float(by_hand), rel=1e-6)


def test_correlated_logits_have_the_asked_correlation_and_spread_less_as_it_grows():
    g = torch.Generator().manual_seed(0)
    z = info.correlated_logits(20000, 3, 0.6, g)
    corr = torch.corrcoef(z.T)
    assert corr[0, 1].item() == pytest.approx(0.6, abs=0.03)
    entropies = [info.code_entropy((info.correlated_logits(4000, 6, rho, g) > 0).long())
                 for rho in (0.0, 0.5, 0.95)]
    assert entropies[0] > entropies[1] > entropies[2] and entropies[0] > 5.9
    with pytest.raises(ValueError, match="rho"):
        info.correlated_logits(10, 2, 1.0, g)
