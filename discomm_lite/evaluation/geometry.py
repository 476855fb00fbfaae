"""The geometry of frozen features: their covariance spectrum, effective dimension and rank (paper
Sec. 5.2, Table 2). Computed on the device of the inputs, returned as plain Python floats."""

from __future__ import annotations

import torch
from torch import Tensor


def spectrum(feats: Tensor) -> Tensor:
    """Eigenvalues of the feature covariance, largest first (paper Sec. 5.2, Fig. 1 and Tab. 2).

    Args:
        feats: (N, D) features, N >= 2.

    Returns:
        (D,) float64 eigenvalues in decreasing order, on the device of ``feats``; the tiny
        negative values that round-off produces for a singular covariance are clamped to 0.
    """
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"spectrum needs (N, D) features with N >= 2; got {tuple(feats.shape)}.")
    centred = feats.double() - feats.double().mean(dim=0)
    covariance = centred.T @ centred / (len(feats) - 1)  # (D, D)
    return torch.linalg.eigvalsh(covariance).flip(0).clamp_min(0)


def geometry(feats: Tensor) -> dict[str, float | list[float]]:
    """Effective dimension, effective rank, explained variance of features (paper Sec. 5.2, Tab. 2).

    With l the covariance eigenvalues: effective_dim = (sum l)^2 / sum l^2 (participation ratio)
    and effective_rank = exp(H(l / sum l)), H the Shannon entropy in nats (Roy & Vetterli 2007).
    Both equal D for isotropic features and r for features spanning r equal directions. Fully
    collapsed features (zero covariance) give 0 for both and an explained variance of ones.

    Args:
        feats: (N, D) features, N >= 2.

    Returns:
        {"effective_dim": float, "effective_rank": float, "explained_variance": list of D
        cumulative explained-variance ratios, the i-th for the first i + 1 components}.
    """
    eigenvalues = spectrum(feats)
    total = eigenvalues.sum()
    if total == 0:
        return {
            "effective_dim": 0.0,
            "effective_rank": 0.0,
            "explained_variance": [1.0] * len(eigenvalues),
        }
    p = eigenvalues / total
    entropy = -torch.where(p > 0, p * p.log(), 0.0).sum()
    return {
        "effective_dim": float(total**2 / eigenvalues.square().sum()),
        "effective_rank": float(entropy.exp()),
        "explained_variance": (eigenvalues.cumsum(0) / total).tolist(),
    }
