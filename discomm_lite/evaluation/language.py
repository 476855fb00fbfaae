"""Analyses of the "binary language": the K-bit codes the teacher's thresholded logits form.

Paper, Sec. 5.5: how much of the channel the codes use (marginal and 8-bit block entropy), how
redundant the bits are (correlation), what single bits mean (mutual information with labelled
factors, image galleries) and how the codes are laid out (t-SNE under Hamming distance).

All functions take codes (N, K) with entries in {0, 1} (bool, integer or float), N items and K
bits. Entropies and mutual informations are plug-in estimates in bits, returned as float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from discomm_lite.evaluation.metrics import as_bits, hamming_distance


def _entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy in bits of distributions along ``dim``, with 0 log 0 = 0."""
    return -torch.where(probs > 0, probs * probs.log2(), 0.0).sum(dim)


def bit_usage(codes: Tensor) -> Tensor:
    """Fraction of items with each bit set.

    Returns:
        (K,) float64 means of the bits.
    """
    return as_bits(codes, torch.float64).mean(dim=0)


def bit_entropy(codes: Tensor) -> Tensor:
    """Marginal entropy of each bit, in bits (paper: about 0.9 per bit for BITS-reset codes).

    Returns:
        (K,) float64 entropies in [0, 1]: 0 for a constant bit, 1 for a fair one.
    """
    p = bit_usage(codes)
    return _entropy(torch.stack([1 - p, p], dim=1))


def block_entropy(codes: Tensor, block: int = 8) -> Tensor:
    """Entropy of the joint patterns of each contiguous block of bits (paper: about 7.1 of 8).

    Bits [j * block, (j + 1) * block) form block j; the K % block trailing bits are ignored. The
    entropy of the 2**block patterns is the plug-in estimate from their empirical frequencies. It
    is biased downwards: it can never exceed log2(N), and for N not much larger than 2**block it
    misses the rare patterns (first-order bias about -(m - 1) / (2 N ln 2) bits for m patterns of
    non-zero probability, Miller 1955). Compare blocks only at equal N.

    Args:
        codes: (N, K) codes.
        block: bits per block, 1 <= block <= min(K, 62).

    Returns:
        (K // block,) float64 entropies in bits, each in [0, block].
    """
    bits = as_bits(codes, torch.float64).long()
    n, n_bits = bits.shape
    if not 1 <= block <= min(n_bits, 62):
        raise ValueError(f"block must be in [1, min(K, 62)] with K = {n_bits}; got {block}.")
    n_blocks = n_bits // block
    powers = 2 ** torch.arange(block, device=bits.device)  # (block,)
    patterns = (bits[:, : n_blocks * block].view(n, n_blocks, block) * powers).sum(-1)  # (N, K//b)
    entropies = []
    for column in patterns.T:
        counts = column.unique(return_counts=True)[1]
        entropies.append(_entropy(counts.double() / n))
    return torch.stack(entropies)


def bit_correlation(codes: Tensor) -> Tensor:
    """Pearson correlation between every pair of bits.

    A constant bit has no defined correlation; its row and column (diagonal included) are 0, so
    the matrix never holds NaN.

    Returns:
        (K, K) float64 correlations in [-1, 1].
    """
    bits = as_bits(codes, torch.float64)
    centred = bits - bits.mean(dim=0)
    covariance = centred.T @ centred / len(bits)  # (K, K)
    std = covariance.diagonal().sqrt()
    scale = std[:, None] * std[None, :]
    return torch.where(scale > 0, covariance / scale, 0.0).clamp(-1, 1)


def bit_factor_mutual_information(codes: Tensor, factors: Tensor) -> Tensor:
    """Mutual information between each bit and each discrete factor (e.g. class, "has person").

    Plug-in estimate I(b; f) = H(b) + H(f) - H(b, f) from the empirical joint frequencies, in bits;
    like every plug-in estimate it is biased upwards for factors with many values and few items.

    Args:
        codes: (N, K) codes.
        factors: (N, F) or (N,) integer factor values (any integers, not necessarily 0..V-1).

    Returns:
        (K, F) float64 mutual informations, each in [0, min(1, H(f))].
    """
    bits = as_bits(codes, torch.float64)
    factors = factors.to(bits.device).reshape(len(factors), -1)
    if len(factors) != len(bits):
        raise ValueError(f"codes have {len(bits)} rows but factors have {len(factors)}.")
    bit_entropies = bit_entropy(bits)  # (K,)
    columns = []
    for factor in factors.T:
        values = factor.unique(return_inverse=True)[1]  # (N,) in [0, V)
        n_values = int(values.max()) + 1
        ones = bits.new_zeros(n_values, bits.shape[1]).index_add_(0, values, bits)  # (V, K)
        p_one = ones.T / len(bits)  # (K, V): P(b = 1, f = v)
        p_factor = torch.bincount(values, minlength=n_values).double() / len(bits)  # (V,)
        joint = torch.stack([p_factor - p_one, p_one], dim=1)  # (K, 2, V)
        mi = bit_entropies + _entropy(p_factor) - _entropy(joint.flatten(1))
        columns.append(mi.clamp_min(0))  # round-off can make an exact 0 slightly negative
    return torch.stack(columns, dim=1)


def language_summary(codes: Tensor) -> dict[str, float]:
    """Scalar summary of a code set, for logging and tables.

    Returns:
        {"mean_bit_entropy", "min_bit_entropy": over bits, in bits;
        "mean_block_entropy": mean entropy of 8-bit blocks (``min(8, K)``-bit if K < 8);
        "constant_bits": fraction of bits that never change (as in the training records);
        "mean_abs_correlation": mean |correlation| over pairs of distinct bits (0 if K = 1);
        "n_distinct_codes": number of different codes among the N}.
    """
    bits = as_bits(codes, torch.float64)
    n_bits = bits.shape[1]
    entropy = bit_entropy(bits)
    usage = bit_usage(bits)
    off_diagonal = ~torch.eye(n_bits, dtype=torch.bool, device=bits.device)
    correlation = bit_correlation(bits)[off_diagonal].abs()
    return {
        "mean_bit_entropy": float(entropy.mean()),
        "min_bit_entropy": float(entropy.min()),
        "mean_block_entropy": float(block_entropy(bits, block=min(8, n_bits)).mean()),
        "constant_bits": float(((usage == 0) | (usage == 1)).double().mean()),
        "mean_abs_correlation": float(correlation.mean()) if n_bits > 1 else 0.0,
        "n_distinct_codes": float(len(bits.unique(dim=0))),
    }


def hamming_tsne(
    codes: Tensor, *, perplexity: float = 30.0, seed: int = 0, max_points: int = 2000
) -> tuple[Tensor, Tensor]:
    """2-D t-SNE of codes under Hamming distance (paper Sec. 5.5, Fig. 2: a ring-like layout).

    Uses scikit-learn's TSNE on the precomputed (M, M) distance matrix, with random
    initialisation (PCA initialisation needs coordinates). When N > max_points, a random subset of
    max_points items is embedded, drawn from ``seed``. The perplexity is clamped to (M - 1) / 3 so
    that small sets work.

    Args:
        codes: (N, K) codes.
        perplexity: t-SNE perplexity, about the number of effective neighbours.
        seed: seed of the subset and of t-SNE.
        max_points: largest number of items embedded (t-SNE costs O(M^2) memory here).

    Returns:
        (embedding (M, 2) float32, indices (M,) int64 into ``codes``, increasing), both on CPU.
    """
    from sklearn.manifold import TSNE  # optional dependency, needed only here

    bits = as_bits(codes, torch.float64)
    n = len(bits)
    if n > max_points:
        subset = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points]
        indices = subset.sort().values
    else:
        indices = torch.arange(n)
    distances = hamming_distance(bits[indices.to(bits.device)], bits[indices.to(bits.device)])
    tsne = TSNE(
        n_components=2,
        perplexity=max(1.0, min(perplexity, (len(indices) - 1) / 3)),
        metric="precomputed",
        init="random",
        random_state=seed,
    )
    embedding = tsne.fit_transform(distances.double().cpu().numpy())
    return torch.from_numpy(embedding).float(), indices


def bit_gallery_indices(
    codes: Tensor,
    labels: Tensor,
    bit: int,
    *,
    per_cell: int = 8,
    classes: list[int] | None = None,
    seed: int = 0,
) -> dict[int, dict[int, list[int]]]:
    """Pick example items per class with one bit off and on, to see what the bit means.

    For a gallery such as "bit 0 separates objects shown with people from objects alone, in
    every class" (paper Sec. 5.5, Fig. 3). Items are drawn by one random order of all N items, from
    ``seed``, so a cell's choice does not depend on which other classes are requested.

    Args:
        codes: (N, K) codes.
        labels: (N,) integer class labels.
        bit: the bit to inspect, in [0, K).
        per_cell: at most this many items per (class, bit value).
        classes: the classes to include; default every class present, in increasing order.
        seed: seed of the random order.

    Returns:
        {class: {0: [indices with the bit off], 1: [indices with the bit on]}}, each list up to
        ``per_cell`` long (shorter when the class has fewer such items).
    """
    bits = as_bits(codes, torch.float64)
    if not 0 <= bit < bits.shape[1]:
        raise ValueError(f"bit must be in [0, {bits.shape[1]}); got {bit}.")
    values = bits[:, bit].cpu().long()
    labels = labels.cpu().long()
    if classes is None:
        classes = labels.unique().tolist()
    order = torch.randperm(len(bits), generator=torch.Generator().manual_seed(seed))
    gallery = {}
    for cls in classes:
        gallery[int(cls)] = {}
        for value in (0, 1):
            in_cell = (labels[order] == cls) & (values[order] == value)
            gallery[int(cls)][value] = order[in_cell][:per_cell].tolist()
    return gallery
