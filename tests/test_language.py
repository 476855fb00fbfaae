"""Code analyses on constructed codes with known entropies, correlations and informations."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch

from discomm_lite.evaluation.language import (
    bit_correlation,
    bit_entropy,
    bit_factor_mutual_information,
    bit_gallery_indices,
    bit_usage,
    block_entropy,
    hamming_tsne,
    language_summary,
)


def _all_patterns(n_bits):
    """(2**n_bits, n_bits): every code exactly once, so all bits are fair and independent."""
    return torch.tensor(list(itertools.product([0, 1], repeat=n_bits)), dtype=torch.uint8)


def _naive_entropy(items):
    counts = Counter(items)
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def _random_codes(n, n_bits, seed):
    g = torch.Generator().manual_seed(seed)
    usage = torch.rand(n_bits, generator=g)  # a different bias per bit
    return (torch.rand(n, n_bits, generator=g) < usage).to(torch.uint8)


# ---- entropies ----------------------------------------------------------------------------------


def test_fair_independent_bits_have_one_bit_each_and_full_blocks():
    codes = _all_patterns(16)
    assert bit_entropy(codes).tolist() == pytest.approx([1.0] * 16, abs=1e-12)
    assert block_entropy(codes, block=8).tolist() == pytest.approx([8.0, 8.0], abs=1e-12)
    # Any subset of the bits is uniform too; the trailing 16 % 5 = 1 bit is ignored.
    assert block_entropy(codes, block=5).tolist() == pytest.approx([5.0] * 3, abs=1e-12)


def test_constant_and_copied_bits():
    fair = _all_patterns(1).repeat(4, 1)  # (8, 1): four 0s and four 1s
    codes = torch.cat([fair.repeat(1, 8), torch.zeros(8, 1, dtype=torch.uint8)], dim=1)
    entropy = bit_entropy(codes)
    assert entropy[:8].tolist() == pytest.approx([1.0] * 8, abs=1e-12)
    assert entropy[8] == 0.0
    # Eight copies of one fair bit carry one bit, not eight.
    assert block_entropy(codes, block=8).tolist() == pytest.approx([1.0], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block", [1, 3, 8])
def test_block_entropy_matches_counting(seed, block):
    codes = _random_codes(300, 17, seed)
    rows = codes.tolist()
    expected = [_naive_entropy(tuple(row[j * block : (j + 1) * block]) for row in rows)
                for j in range(17 // block)]
    assert block_entropy(codes, block=block).tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_bit_entropy_and_usage_match_counting(seed):
    codes = _random_codes(200, 9, seed)
    columns = codes.T.tolist()
    assert bit_usage(codes).tolist() == pytest.approx([sum(c) / 200 for c in columns])
    assert bit_entropy(codes).tolist() == pytest.approx([_naive_entropy(c) for c in columns],
                                                        abs=1e-12)


def test_non_binary_codes_are_rejected():
    with pytest.raises(ValueError, match="0 and 1"):
        bit_entropy(torch.tensor([[0.0, 0.5]]))


# ---- correlation --------------------------------------------------------------------------------


def test_correlation_of_copies_complements_and_constants():
    g = torch.Generator().manual_seed(3)
    base = torch.randint(0, 2, (100,), generator=g)
    other = torch.randint(0, 2, (100,), generator=g)
    codes = torch.stack([base, base, 1 - base, torch.zeros(100, dtype=torch.long),
                         torch.ones(100, dtype=torch.long), other], dim=1)
    corr = bit_correlation(codes)
    assert not corr.isnan().any()
    assert corr[0, 1] == pytest.approx(1.0)
    assert corr[0, 2] == pytest.approx(-1.0)
    assert corr[3].abs().sum() == 0 and corr[:, 4].abs().sum() == 0
    live = [0, 1, 2, 5]
    expected = np.corrcoef(codes[:, live].double().numpy(), rowvar=False)
    np.testing.assert_allclose(corr[live][:, live].numpy(), expected, atol=1e-12)


# ---- mutual information -------------------------------------------------------------------------


def _naive_mi(bits, factor):
    return (_naive_entropy(bits) + _naive_entropy(factor)
            - _naive_entropy(list(zip(bits, factor, strict=True))))


def test_mutual_information_of_determined_and_independent_bits():
    codes = _all_patterns(3)  # (8, 3) fair independent bits
    factors = torch.stack([
        codes[:, 0].long() * 5 - 2,  # bit 0 under another name: values -2 and 3
        codes[:, 0].long() + 2 * codes[:, 1].long(),  # 4 values whose parity is bit 0
        torch.full((8,), 7),  # constant factor
    ], dim=1)
    mi = bit_factor_mutual_information(codes, factors)
    assert mi.shape == (3, 3)
    expected = [[1.0, 1.0, 0.0],  # bit 0 is determined by factors 0 and 1
                [0.0, 1.0, 0.0],  # bit 1 is determined by factor 1, independent of factor 0
                [0.0, 0.0, 0.0]]  # bit 2 is independent of every factor
    np.testing.assert_allclose(mi.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_mutual_information_matches_counting(seed):
    codes = _random_codes(150, 5, seed)
    g = torch.Generator().manual_seed(seed + 10)
    factors = torch.stack([torch.randint(0, 3, (150,), generator=g),
                           codes[:, 1].long() * torch.randint(1, 4, (150,), generator=g)], dim=1)
    mi = bit_factor_mutual_information(codes, factors)
    for k, f in itertools.product(range(5), range(2)):
        expected = _naive_mi(codes[:, k].tolist(), factors[:, f].tolist())
        assert mi[k, f] == pytest.approx(expected, abs=1e-12)
    # A single factor may be given as a vector.
    assert torch.equal(bit_factor_mutual_information(codes, factors[:, 0]), mi[:, :1])


# ---- summary ------------------------------------------------------------------------------------


def test_language_summary_of_constructed_codes():
    # 8 fair independent bits (all 256 codes) and one constant bit.
    codes = torch.cat([_all_patterns(8), torch.ones(256, 1, dtype=torch.uint8)], dim=1)
    summary = language_summary(codes)
    assert summary == pytest.approx({
        "mean_bit_entropy": 8 / 9,
        "min_bit_entropy": 0.0,
        "mean_block_entropy": 8.0,  # one full 8-bit block; the constant ninth bit is left over
        "constant_bits": 1 / 9,
        "mean_abs_correlation": 0.0,
        "n_distinct_codes": 256.0,
    }, abs=1e-12)
    assert all(isinstance(v, float) for v in summary.values())


def test_language_summary_of_identical_codes():
    summary = language_summary(torch.tensor([[1, 0, 1]] * 5))
    assert summary["n_distinct_codes"] == 1.0
    assert summary["constant_bits"] == 1.0
    assert summary["mean_block_entropy"] == 0.0  # K = 3 < 8: one 3-bit block


# ---- t-SNE and galleries ------------------------------------------------------------------------


def _two_clusters(n_per_cluster, n_bits, seed):
    """Codes near a random prototype or near its complement (2 bits flipped per code)."""
    g = torch.Generator().manual_seed(seed)
    prototype = torch.randint(0, 2, (n_bits,), generator=g)
    centres = torch.stack([prototype, 1 - prototype]).repeat_interleave(n_per_cluster, dim=0)
    flips = torch.zeros_like(centres)
    for row in flips:
        row[torch.randperm(n_bits, generator=g)[:2]] = 1
    return centres ^ flips, torch.arange(2).repeat_interleave(n_per_cluster)


def test_hamming_tsne_keeps_hamming_neighbours_together():
    codes, cluster = _two_clusters(30, 32, seed=0)
    embedding, indices = hamming_tsne(codes, perplexity=10.0)
    assert embedding.shape == (60, 2) and torch.equal(indices, torch.arange(60))
    distances = torch.cdist(embedding, embedding).fill_diagonal_(math.inf)
    nearest = distances.argmin(dim=1)
    assert (cluster[nearest] == cluster).float().mean() >= 0.95


def test_hamming_tsne_subsamples_deterministically():
    codes, _ = _two_clusters(25, 16, seed=1)
    embedding, indices = hamming_tsne(codes, max_points=20, seed=3)
    again, same_indices = hamming_tsne(codes, max_points=20, seed=3)
    assert embedding.shape == (20, 2)
    assert torch.equal(indices, same_indices) and torch.equal(embedding, again)
    assert len(indices.unique()) == 20 and torch.equal(indices, indices.sort().values)
    assert 0 <= int(indices.min()) and int(indices.max()) < 50


def test_bit_gallery_indices_pick_matching_items():
    g = torch.Generator().manual_seed(4)
    codes = torch.randint(0, 2, (60, 6), generator=g)
    labels = torch.randint(0, 3, (60,), generator=g)
    codes[labels == 2, 4] = 1  # class 2 never has bit 4 off
    gallery = bit_gallery_indices(codes, labels, 4, per_cell=5, seed=1)
    assert list(gallery) == [0, 1, 2]
    for cls, cells in gallery.items():
        for value in (0, 1):
            available = int(((labels == cls) & (codes[:, 4] == value)).sum())
            assert len(cells[value]) == min(5, available)
            assert len(set(cells[value])) == len(cells[value])
            assert all(labels[i] == cls and codes[i, 4] == value for i in cells[value])
    assert gallery[2][0] == []
    # The same seed gives the same cells, whichever classes are asked for.
    assert bit_gallery_indices(codes, labels, 4, per_cell=5, seed=1) == gallery
    assert bit_gallery_indices(codes, labels, 4, per_cell=5, classes=[1], seed=1) == {
        1: gallery[1]}
    with pytest.raises(ValueError, match="bit"):
        bit_gallery_indices(codes, labels, 6)
