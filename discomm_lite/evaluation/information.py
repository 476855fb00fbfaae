"""The information quantities behind BITS's objective, counted exactly on small codes (notebook 01).

The paper maximises I(Z1; Z2) = H(Z) - H(Z1 | Z2) between the K-bit messages of two views: the
cross-view BCE bounds H(Z1 | Z2) from above (`cross_entropy_bits`: for any predictor
q(z1 | z2), E[-log2 q(Z1 | Z2)] >= H(Z1 | Z2)), and the coding rate stands in for H(Z). With
K <= ~12 bits and a few thousand rows, every entropy here is the plug-in entropy of the codes'
empirical distribution (the 2^K messages can be counted), so the inequalities can be checked
number by number. Entropies are in bits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_codes(codes: Tensor, name: str = "codes") -> Tensor:
    if codes.ndim != 2 or codes.shape[1] > 62:
        raise ValueError(f"{name} must be (N, K) bits with K <= 62; got {tuple(codes.shape)}.")
    if not torch.all((codes == 0) | (codes == 1)):
        raise ValueError(f"{name} must hold only 0 and 1.")
    return codes.long()


def _as_integers(codes: Tensor) -> Tensor:
    """(N, K) bits -> (N,) integers, bit k weighted 2^k: one integer per message."""
    codes = _check_codes(codes)
    return (codes << torch.arange(codes.shape[1], device=codes.device)).sum(1)


def _entropy_of_counts(counts: Tensor) -> float:
    p = counts.double() / counts.sum()
    return float(-(p * p.log2()).sum())


def code_entropy(codes: Tensor) -> float:
    """H(Z): the entropy (bits) of the empirical distribution of the rows of `codes` (N, K)."""
    return _entropy_of_counts(torch.unique(_as_integers(codes), return_counts=True)[1])


def joint_entropy(a: Tensor, b: Tensor) -> float:
    """H(A, B) of paired codes (N, K_a) and (N, K_b), rows paired by index."""
    return code_entropy(torch.cat([_check_codes(a, "a"), _check_codes(b, "b")], dim=1))


def conditional_entropy(a: Tensor, b: Tensor) -> float:
    """H(A | B) = H(A, B) - H(B): what is left of A's message once B's is known."""
    return joint_entropy(a, b) - code_entropy(b)


def mutual_information(a: Tensor, b: Tensor) -> float:
    """I(A; B) = H(A) - H(A | B): what one message tells of the other."""
    return code_entropy(a) - conditional_entropy(a, b)


def cross_entropy_bits(targets: Tensor, logits: Tensor) -> float:
    """E[-log2 q(z | .)] of a factorised Bernoulli predictor: the summed per-bit BCE in bits.

    q(z | .) = prod_k sigmoid(logit_k)^z_k (1 - sigmoid(logit_k))^(1 - z_k), averaged over the
    rows; BITS's BCE (Eq. 8) is this divided by K ln 2 (in nats per bit). When `logits` are a
    function of the other view's message only, this is >= `conditional_entropy(targets,
    that message)` for every predictor (Gibbs' inequality in each group of rows with one
    message), with equality only for the best one.
    """
    targets = _check_codes(targets, "targets").to(logits.dtype)
    nats = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()
    return float(nats) / math.log(2)


def two_view_logits(n: int, k: int, noise: float, generator: torch.Generator
                    ) -> tuple[Tensor, Tensor]:
    """The logits of two views of n images: a shared standard Gaussian signal per image and bit,
    plus independent Gaussian noise of std `noise` in each view; (N, K) each. Thresholded at 0,
    they are two views' messages sharing more as the noise shrinks."""
    signal = torch.randn(n, k, generator=generator)
    return tuple(signal + noise * torch.randn(n, k, generator=generator) for _ in range(2))


def correlated_logits(n: int, k: int, rho: float, generator: torch.Generator) -> Tensor:
    """(N, K) Gaussian logits whose K coordinates have pairwise correlation `rho` in [0, 1):
    sqrt(rho) x a component shared by all bits plus sqrt(1 - rho) x one of each bit's own.
    rho = 0 spreads the messages over all 2^K codes; rho -> 1 sends (nearly) one message."""
    if not 0 <= rho < 1:
        raise ValueError(f"rho must be in [0, 1); got {rho}.")
    shared = torch.randn(n, 1, generator=generator)
    own = torch.randn(n, k, generator=generator)
    return math.sqrt(rho) * shared + math.sqrt(1 - rho) * own
