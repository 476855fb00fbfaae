"""Evaluation of frozen features and binary codes by neighbours: k-NN and retrieval mAP.

Every function computes on the device of its inputs and returns plain Python floats (or tensors
where stated), so results go straight into a metrics record. Accuracies and mAP are fractions in
[0, 1], not percentages. Functions that compare every test item with every train/database item
process the test side in chunks sized by ``memory_budget_mb``, so any set size fits in memory and
tiny sets (fewer items than ``k``) work.

Shapes: ``N`` train/database items, ``M`` test/query items, ``D`` feature dim, ``K`` bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

KNN_PROTOCOLS: dict[str, dict[str, float]] = {
    # Caron et al. 2021 (DINO), eval_knn.py: 20 neighbours, T = 0.07.
    "dino": {"k": 20, "temperature": 0.07},
    # Wu et al. 2018 as used by lightly's benchmarks: 200 neighbours, T = 0.1.
    "lightly": {"k": 200, "temperature": 0.1},
}

_MIB = 2**20


def as_float(x: Tensor) -> Tensor:
    """Promote ints, bools and half precision to float32; keep float64 as is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _rows_per_chunk(bytes_per_row: int, memory_budget_mb: float) -> int:
    """Rows that fit in the budget; at least one, so even a tiny budget makes progress."""
    return max(1, int(memory_budget_mb * _MIB // max(bytes_per_row, 1)))


def check_pair(feats: Tensor, labels: Tensor, name: str) -> None:
    """Raise a readable error unless ``feats`` is (N, D) with N >= 1 and ``labels`` has N rows."""
    if feats.ndim != 2 or len(feats) == 0:
        raise ValueError(f"{name} must be a non-empty 2-D tensor (N, D); got {tuple(feats.shape)}.")
    if len(labels) != len(feats):
        raise ValueError(f"{name} has {len(feats)} rows but its labels have {len(labels)}.")


def hamming_distance(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise Hamming distances (number of differing bits) between two sets of binary codes.

    Args:
        a: (M, K) codes in {0, 1} (bool, integer or float).
        b: (N, K) codes in {0, 1}, on the device of ``a``.

    Returns:
        (M, N) float32 distances. They are exact integers: two matrix products of 0/1 values
        accumulate in float32, which is exact for K < 2**24.
    """
    return _hamming(as_bits(a), as_bits(b))


def _hamming(a: Tensor, b: Tensor) -> Tensor:
    """(M, N) Hamming distances between float 0/1 codes (M, K) and (N, K), unchecked."""
    return a @ (1 - b).T + (1 - a) @ b.T


def as_bits(codes: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Binary codes (N, K) as 0/1 values of `dtype`, checked: the entry of every code function.

    Args:
        codes: (N, K), N >= 1, entries 0 or 1 (bool, integer or float).
        dtype: float32 for distances (exact matrix products), float64 for statistics.
    """
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"codes must be a non-empty (N, K) tensor; got {tuple(codes.shape)}.")
    bits = codes.to(dtype)
    if not ((bits == 0) | (bits == 1)).all():
        raise ValueError("codes must contain only 0 and 1: threshold logits first (codes = "
                         "logits > 0); an entry that is not 0 or 1 was found.")
    return bits


def knn_classify(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    n_classes: int | None = None,
    memory_budget_mb: float = 256.0,
) -> dict[str, float]:
    """Weighted k-NN classification of frozen features (DINO, Caron et al. 2021, Sec. 4.1).

    Features are L2-normalised; each test item takes its k most cosine-similar train items, which
    vote for their class with weight exp(sim / temperature). Classes are ranked by summed vote;
    ties (for instance classes with no neighbour) go to the lower class index, so results do not
    depend on the device. Ties between equally similar neighbours are resolved by ``torch.topk``.

    Args:
        train_feats: (N, D) features of the labelled set.
        train_labels: (N,) integer labels.
        test_feats: (M, D) features to classify.
        test_labels: (M,) integer labels.
        k: neighbours; clamped to N.
        temperature: vote temperature T.
        n_classes: number of classes; default 1 + the largest label seen.
        memory_budget_mb: memory for one chunk of test items (its (M_chunk, N) similarities).

    Returns:
        {"top1", "top5"}: fractions of test items whose label is the first class, or among the
        first min(5, n_classes) classes.
    """
    check_pair(train_feats, train_labels, "train_feats")
    check_pair(test_feats, test_labels, "test_feats")
    train = F.normalize(as_float(train_feats), dim=1)
    test = F.normalize(as_float(test_feats).to(train.device), dim=1)
    train_labels = train_labels.to(train.device, torch.long)
    test_labels = test_labels.to(train.device, torch.long)
    if n_classes is None:
        n_classes = 1 + int(max(train_labels.max(), test_labels.max()))
    k = min(k, len(train))
    n_top = min(5, n_classes)
    elem = train.element_size()
    chunk = _rows_per_chunk(
        len(train) * elem + k * (2 * elem + 8) + n_classes * (elem + 8), memory_budget_mb
    )
    hits1 = hits5 = 0
    for start in range(0, len(test), chunk):
        sims, neighbours = (test[start : start + chunk] @ train.T).topk(k, dim=1)  # (C, k)
        # Subtracting each row's largest similarity rescales its votes by a common factor, which
        # leaves the ranking unchanged and keeps exp() finite for any temperature.
        weights = ((sims - sims[:, :1]) / temperature).exp()
        votes = torch.zeros(len(sims), n_classes, dtype=sims.dtype, device=sims.device)
        votes.scatter_add_(1, train_labels[neighbours], weights)  # (C, n_classes)
        ranked = votes.sort(dim=1, descending=True, stable=True).indices[:, :n_top]
        correct = ranked == test_labels[start : start + chunk, None]  # (C, n_top)
        hits1 += int(correct[:, 0].sum())
        hits5 += int(correct.any(dim=1).sum())
    return {"top1": hits1 / len(test), "top5": hits5 / len(test)}


def evaluate_knn(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    protocols: Sequence[str] = ("dino", "lightly"),
    *,
    n_classes: int | None = None,
    memory_budget_mb: float = 256.0,
) -> dict[str, float]:
    """Weighted k-NN top-1 accuracy under several protocols of ``KNN_PROTOCOLS``.

    Returns:
        {f"knn{k}_top1": accuracy} for each protocol, e.g. {"knn20_top1", "knn200_top1"}; the key
        names the requested k even when a small train set clamps it.
    """
    results = {}
    for name in protocols:
        if name not in KNN_PROTOCOLS:
            raise ValueError(f"Unknown k-NN protocol {name!r}; choose from {list(KNN_PROTOCOLS)}.")
        k, temperature = KNN_PROTOCOLS[name]["k"], KNN_PROTOCOLS[name]["temperature"]
        accuracy = knn_classify(
            train_feats, train_labels, test_feats, test_labels, k=int(k),
            temperature=temperature, n_classes=n_classes, memory_budget_mb=memory_budget_mb,
        )
        results[f"knn{int(k)}_top1"] = accuracy["top1"]
    return results


def _relevance(query_labels: Tensor, database_labels: Tensor) -> Tensor:
    """(M, N) bool: same class for (M,)/(N,) labels; at least one shared label for multi-hot."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == database_labels[None, :]
    return (query_labels.float() @ database_labels.float().T) > 0


def retrieval_map(
    query: Tensor,
    query_labels: Tensor,
    database: Tensor | None = None,
    database_labels: Tensor | None = None,
    *,
    metric: str = "cosine",
    k: int | None = None,
    memory_budget_mb: float = 256.0,
) -> dict[str, float]:
    """Mean average precision of ranking a database for each query (paper Sec. 5.1, mAP@ALL).

    Ranking: by decreasing cosine similarity (``metric="cosine"``) or increasing Hamming distance
    between {0, 1} codes (``metric="hamming"``). Ties are broken deterministically by a stable sort:
    equally close items are ranked by increasing database index. A database item is relevant when
    it has the query's label; with multi-hot labels (M, L) / (N, L), when it shares at least one.

    Average precision of a query with R relevant items in the database, over its top k results:
    AP@k = sum_{i <= k} P@i * rel_i / min(k, R), with P@i the precision of the first i results.
    ``k=None`` ranks the whole database (mAP@ALL, normalised by R). Queries with R = 0 have no
    defined AP and are left out of the mean ("map" is NaN when every query has R = 0). ``k`` is
    clamped to the database size.

    Args:
        query: (M, D) features, or (M, K) codes for ``metric="hamming"``.
        query_labels: (M,) integer labels or (M, L) multi-hot labels.
        database: (N, D) or (N, K), a database apart from the queries (the paper's protocol: the
            query and database sets of FFPQ's ImageNet retrieval split); ``None`` is self-search:
            the queries search themselves, each query excluding itself (N = M - 1 candidates per
            query), a proxy when no split is at hand.
        database_labels: labels of the database, like ``query_labels``.
        metric: "cosine" or "hamming".
        k: evaluate the top k results (mAP@k), or ``None`` for mAP@ALL.
        memory_budget_mb: memory for one chunk of queries (their (M_chunk, N) rankings).

    Returns:
        {"map": mAP} plus {"precision_at_k": mean P@k over all queries} when ``k`` is given.
    """
    if metric not in ("cosine", "hamming"):
        raise ValueError(f"metric must be 'cosine' or 'hamming'; got {metric!r}.")
    if k is not None and k < 1:
        raise ValueError(f"k = {k}: mAP@k needs k >= 1 (None: mAP@ALL).")
    self_search = database is None
    if self_search:
        database, database_labels = query, query_labels
    elif database_labels is None:
        raise ValueError("database_labels is required when a database is given.")
    check_pair(query, query_labels, "query")
    check_pair(database, database_labels, "database")
    device = query.device
    if metric == "cosine":
        query = F.normalize(as_float(query), dim=1)
        database = F.normalize(as_float(database).to(device), dim=1)
    else:
        query, database = as_bits(query), as_bits(database.to(device))
    query_labels = query_labels.to(device)
    database_labels = database_labels.to(device)
    n_candidates = len(database) - self_search
    if n_candidates < 1:
        raise ValueError("Retrieval needs at least one database item besides the query itself.")
    top = n_candidates if k is None else min(k, n_candidates)
    ranks = torch.arange(1, top + 1, device=device)

    # Bytes per (query, database) pair: key, sorted key and index, relevance, float64 sums.
    chunk = _rows_per_chunk(64 * len(database), memory_budget_mb)
    ap_sum, n_answerable, precision_sum = 0.0, 0, 0.0
    for start in range(0, len(query), chunk):
        rows = slice(start, start + chunk)
        if metric == "cosine":
            key = -(query[rows] @ database.T)  # (C, N), ascending = most similar first
        else:
            key = _hamming(query[rows], database)  # (C, N)
        if self_search:
            # The query itself goes last and is cut off below.
            own = torch.arange(start, start + len(key), device=device)
            key[torch.arange(len(key), device=device), own] = math.inf
        order = key.sort(dim=1, stable=True).indices[:, :n_candidates]  # (C, N')
        relevant = _relevance(query_labels[rows], database_labels).gather(1, order)  # (C, N')
        n_relevant = relevant.sum(dim=1)  # (C,)
        hits = relevant[:, :top].double()  # (C, top)
        precision = hits.cumsum(dim=1) / ranks  # (C, top): P@i
        ap = (precision * hits).sum(dim=1) / n_relevant.clamp(min=1, max=top)
        answerable = n_relevant > 0
        ap_sum += float(ap[answerable].sum())
        n_answerable += int(answerable.sum())
        precision_sum += float(precision[:, -1].sum())
    results = {"map": ap_sum / n_answerable if n_answerable else math.nan}
    if k is not None:
        results["precision_at_k"] = precision_sum / len(query)
    return results


def map_vs_bits(
    codes: Tensor,
    labels: Tensor,
    bits_kept: Sequence[int] = (16, 32, 64, 128, 256),
    *,
    database: Tensor | None = None,
    database_labels: Tensor | None = None,
    k: int | None = None,
    memory_budget_mb: float = 256.0,
) -> dict[int, float]:
    """Hamming retrieval mAP of the codes truncated to their first b bits (paper Sec. 5.5).

    As ``retrieval_map`` with ``metric="hamming"``: the codes search ``database`` when given (a
    query/database split), else themselves, each query excluding itself (self-search). Values of
    b larger than K are skipped; K itself is always included.

    Args:
        codes: (M, K) query codes in {0, 1}.
        labels: (M,) integer labels or (M, L) multi-hot labels.
        bits_kept: the prefix lengths b to evaluate.
        database: (N, K) database codes, or ``None`` for self-search.
        database_labels: labels of the database, like ``labels``.
        k: mAP@k, or ``None`` for mAP@ALL.
        memory_budget_mb: as in ``retrieval_map``.

    Returns:
        {b: mAP} in increasing b.
    """
    n_bits = codes.shape[1]
    if any(b < 1 for b in bits_kept):
        raise ValueError(f"bits_kept must be positive; got {tuple(bits_kept)}.")
    kept = sorted({b for b in bits_kept if b <= n_bits} | {n_bits})
    return {
        b: retrieval_map(
            codes[:, :b], labels, None if database is None else database[:, :b],
            database_labels, metric="hamming", k=k, memory_budget_mb=memory_budget_mb,
        )["map"]
        for b in kept
    }
