"""Probes of frozen features beyond their neighbours: the fast linear probe and their geometry.

Like `evaluate`, every function computes on the device of its inputs and returns plain Python
floats (or tensors where stated). Shapes: ``N`` train items, ``M`` test items, ``D`` feature dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from discomm_lite.evaluate import as_float, check_pair


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 1024,
    seed: int = 0,
    n_classes: int | None = None,
) -> dict[str, float]:
    """Multinomial logistic regression on frozen, standardised features: the fast linear proxy.

    A proxy for the linear probing the paper reports: it trains on features extracted once from
    un-augmented, center-cropped images, so it takes seconds, but it is not DINO's protocol
    (eval_linear.py: SGD on random-resized, flipped crops through the frozen backbone, 100
    epochs), which ``features.dino_linear_probe`` follows. Compare its numbers with each other,
    not with the paper's.

    Features are standardised with the train set's mean and standard deviation, so the probe
    is invariant to a per-dimension affine rescaling of the features. The weights start at zero
    and are fitted by Adam on mini-batches (``batch_size >= N`` is full-batch gradient descent)
    with a cosine-decayed learning rate, minimising cross-entropy + weight_decay / 2 * ||W||^2
    (the bias is not penalised). The only randomness is the batch order, drawn from ``seed``, so
    the result is deterministic for a seed. It trains even when called under ``torch.no_grad()``
    or ``torch.inference_mode()``.

    Args:
        train_feats: (N, D) features to fit on.
        train_labels: (N,) integer labels.
        test_feats: (M, D) features to evaluate.
        test_labels: (M,) integer labels.
        epochs: passes over the train set.
        lr: peak Adam learning rate.
        weight_decay: L2 penalty coefficient on the weights.
        batch_size: mini-batch size.
        seed: seed of the batch order.
        n_classes: number of classes; default 1 + the largest label seen.

    Returns:
        {"linear_top1": test accuracy, "linear_train_top1": train accuracy}.
    """
    check_pair(train_feats, train_labels, "train_feats")
    check_pair(test_feats, test_labels, "test_feats")
    x_train = as_float(train_feats)
    device = x_train.device
    x_test = as_float(test_feats).to(device)
    y_train = train_labels.to(device, torch.long)
    y_test = test_labels.to(device, torch.long)
    if n_classes is None:
        n_classes = 1 + int(max(y_train.max(), y_test.max()))
    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0, correction=0).clamp_min(1e-8)  # constant dims become 0, not inf
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    n, dim = x_train.shape
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = max(1, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    # The features may come from an inference_mode / no_grad evaluation block; the probe trains.
    with torch.inference_mode(False), torch.enable_grad():
        weight = torch.zeros(n_classes, dim, dtype=x_train.dtype, device=device, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=x_train.dtype, device=device, requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=lr)
        # Gathering each batch into one reused buffer avoids a fresh allocation per step, which
        # on CPU costs more than the step itself.
        x_batch = torch.empty(min(batch_size, n), dim, dtype=x_train.dtype, device=device)
        step = 0
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            for batch in order.split(batch_size):
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
                inputs = torch.index_select(x_train, 0, batch, out=x_batch[: len(batch)])
                logits = inputs @ weight.T + bias  # (batch, n_classes)
                loss = F.cross_entropy(logits, y_train[batch])
                loss = loss + 0.5 * weight_decay * weight.square().sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
    with torch.no_grad():
        train_hits = int(((x_train @ weight.T + bias).argmax(dim=1) == y_train).sum())
        test_hits = int(((x_test @ weight.T + bias).argmax(dim=1) == y_test).sum())
    return {"linear_top1": test_hits / len(y_test), "linear_train_top1": train_hits / n}


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
