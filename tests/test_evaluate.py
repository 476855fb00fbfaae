"""Evaluation against naive references: Python-loop k-NN and average precision, NumPy spectra."""

import math

import numpy as np
import pytest
import torch

from discomm_lite.evaluation.geometry import geometry, spectrum
from discomm_lite.evaluation.metrics import (
    KNN_PROTOCOLS,
    as_bits,
    evaluate_knn,
    hamming_distance,
    knn_classify,
    map_vs_bits,
    retrieval_map,
)
from discomm_lite.evaluation.probes import linear_probe


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _cosine(u, v):
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def _naive_knn(train, train_labels, test, test_labels, k, temperature, n_classes):
    """Loops over test items, neighbours and classes; classes tied in votes rank by index."""
    train, test = train.tolist(), test.tolist()
    train_labels, test_labels = train_labels.tolist(), test_labels.tolist()
    hits1 = hits5 = 0
    for item, label in zip(test, test_labels, strict=True):
        sims = sorted(((_cosine(item, other), j) for j, other in enumerate(train)), reverse=True)
        votes = [0.0] * n_classes
        for sim, j in sims[: min(k, len(train))]:
            votes[train_labels[j]] += math.exp(sim / temperature)
        ranked = sorted(range(n_classes), key=lambda c: (-votes[c], c))
        hits1 += ranked[0] == label
        hits5 += label in ranked[: min(5, n_classes)]
    return {"top1": hits1 / len(test), "top5": hits5 / len(test)}


def _naive_retrieval(query, query_labels, database, database_labels, metric, k, self_search):
    """Rank every database item for each query with Python sorts; AP@k normalised by min(k, R)."""
    maps, precisions = [], []
    for q, (item, label) in enumerate(zip(query.tolist(), query_labels.tolist(), strict=True)):
        candidates = []
        for j, (other, other_label) in enumerate(
            zip(database.tolist(), database_labels.tolist(), strict=True)
        ):
            if self_search and j == q:
                continue
            if metric == "cosine":
                key = -_cosine(item, other)
            else:
                key = sum(a != b for a, b in zip(item, other, strict=True))
            if isinstance(label, list):  # multi-hot: relevant when a label is shared
                relevant = any(a and b for a, b in zip(label, other_label, strict=True))
            else:
                relevant = label == other_label
            candidates.append((key, j, relevant))
        candidates.sort()  # by key, then by database index
        top = len(candidates) if k is None else min(k, len(candidates))
        n_relevant = sum(c[2] for c in candidates)
        hits, ap = 0, 0.0
        for i, (_, _, relevant) in enumerate(candidates[:top]):
            if relevant:
                hits += 1
                ap += hits / (i + 1)
        precisions.append(hits / top)
        if n_relevant:
            maps.append(ap / min(top, n_relevant))
    return {"map": sum(maps) / len(maps), "precision_at_k": sum(precisions) / len(precisions)}


# ---- k-NN ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "n_train,n_test,dim,n_classes,k,temperature",
    [(40, 15, 6, 4, 5, 0.07), (30, 10, 3, 8, 20, 0.1), (7, 5, 4, 3, 20, 0.5),
     (25, 9, 5, 2, 1, 1.0)],
)
def test_knn_matches_naive_loops(seed, n_train, n_test, dim, n_classes, k, temperature):
    g = _generator(seed)
    train = torch.randn(n_train, dim, generator=g, dtype=torch.float64)
    test = torch.randn(n_test, dim, generator=g, dtype=torch.float64)
    train_labels = torch.randint(0, n_classes, (n_train,), generator=g)
    test_labels = torch.randint(0, n_classes, (n_test,), generator=g)
    result = knn_classify(train, train_labels, test, test_labels, k=k, temperature=temperature,
                          n_classes=n_classes)
    expected = _naive_knn(train, train_labels, test, test_labels, k, temperature, n_classes)
    assert result == pytest.approx(expected, abs=1e-12)


def test_knn_chunked_equals_unchunked():
    g = _generator(3)
    train, test = torch.randn(200, 16, generator=g), torch.randn(50, 16, generator=g)
    train_labels = torch.randint(0, 10, (200,), generator=g)
    test_labels = torch.randint(0, 10, (50,), generator=g)
    whole = knn_classify(train, train_labels, test, test_labels, memory_budget_mb=1024.0)
    chunked = knn_classify(train, train_labels, test, test_labels, memory_budget_mb=1e-6)
    assert chunked == whole


def test_knn_recovers_clusters_and_clamps_k_on_tiny_sets():
    # 3 train items, one per class, far apart; k = 20 must clamp to 3.
    centres = torch.eye(3) * 10
    test = centres.repeat(2, 1)[:5] + 0.1 * torch.randn(5, 3, generator=_generator(0))
    result = knn_classify(centres, torch.arange(3), test, torch.arange(3).repeat(2)[:5], k=20)
    assert result == {"top1": 1.0, "top5": 1.0}


def test_evaluate_knn_runs_each_protocol():
    g = _generator(4)
    train, test = torch.randn(300, 8, generator=g), torch.randn(40, 8, generator=g)
    train_labels = torch.randint(0, 5, (300,), generator=g)
    test_labels = torch.randint(0, 5, (40,), generator=g)
    result = evaluate_knn(train, train_labels, test, test_labels)
    assert set(result) == {"knn20_top1", "knn200_top1"}
    for name in ("dino", "lightly"):
        protocol = KNN_PROTOCOLS[name]
        expected = knn_classify(train, train_labels, test, test_labels, k=protocol["k"],
                                temperature=protocol["temperature"])["top1"]
        assert result[f"knn{protocol['k']}_top1"] == expected


def test_evaluate_knn_rejects_unknown_protocol():
    x, y = torch.randn(4, 2), torch.arange(4)
    with pytest.raises(ValueError, match="protocol"):
        evaluate_knn(x, y, x, y, protocols=("simclr",))


# ---- linear probe -------------------------------------------------------------------------------


def _blobs(n_classes, dim, separation, n_train, n_test, seed):
    """Unit-variance Gaussian blobs around random centres, the same for train and test."""
    g = _generator(seed)
    centres = torch.randn(n_classes, dim, generator=g) * separation
    sets = []
    for n_per_class in (n_train, n_test):
        labels = torch.arange(n_classes).repeat_interleave(n_per_class)
        sets += [centres[labels] + torch.randn(len(labels), dim, generator=g), labels]
    return sets


def test_linear_probe_separates_gaussian_blobs():
    train, train_labels, test, test_labels = _blobs(4, 16, 8.0, 100, 50, seed=0)
    result = linear_probe(train, train_labels, test, test_labels, epochs=30, batch_size=64)
    assert result["linear_train_top1"] >= 0.99
    assert result["linear_top1"] >= 0.99


def test_linear_probe_is_deterministic_for_a_seed_and_in_no_grad():
    train, train_labels, test, test_labels = _blobs(5, 12, 0.6, 60, 20, seed=1)
    kwargs = {"epochs": 10, "batch_size": 32, "seed": 7}
    first = linear_probe(train, train_labels, test, test_labels, **kwargs)
    second = linear_probe(train, train_labels, test, test_labels, **kwargs)
    with torch.inference_mode():
        third = linear_probe(train, train_labels, test, test_labels, **kwargs)
    assert first == second == third


def test_linear_probe_standardises_features():
    # An affine rescaling of every dimension must not change the probe (up to float round-off).
    train, train_labels, test, test_labels = _blobs(3, 10, 0.5, 80, 80, seed=3)
    scale = torch.logspace(-2, 3, 10)
    shift = torch.linspace(-500, 500, 10)
    plain = linear_probe(train, train_labels, test, test_labels, epochs=20, batch_size=32)
    scaled = linear_probe(train * scale + shift, train_labels, test * scale + shift, test_labels,
                          epochs=20, batch_size=32)
    assert plain["linear_top1"] == pytest.approx(scaled["linear_top1"], abs=2 / len(test))
    assert plain["linear_train_top1"] == pytest.approx(scaled["linear_train_top1"],
                                                       abs=2 / len(train))


def test_linear_probe_tiny_set():
    train = torch.tensor([[-2.0, 0.0], [-1.0, 0.5], [1.0, 0.0], [2.0, -0.5], [3.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])  # separated by the sign of the first feature
    result = linear_probe(train, labels, train, labels, epochs=200)
    assert result == {"linear_top1": 1.0, "linear_train_top1": 1.0}


# ---- retrieval ----------------------------------------------------------------------------------


def _retrieval_data(metric, n, dim, n_classes, seed):
    g = _generator(seed)
    if metric == "cosine":
        feats = torch.randn(n, dim, generator=g, dtype=torch.float64)
    else:  # few bits: many ties, which exercise the tie-breaking
        feats = torch.randint(0, 2, (n, dim), generator=g, dtype=torch.uint8)
    return feats, torch.randint(0, n_classes, (n,), generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric,dim", [("cosine", 5), ("hamming", 4), ("hamming", 9)])
@pytest.mark.parametrize("k", [None, 1, 4, 1000])
def test_self_retrieval_matches_naive_ap(seed, metric, dim, k):
    feats, labels = _retrieval_data(metric, 25, dim, 4, seed)
    result = retrieval_map(feats, labels, metric=metric, k=k)
    expected = _naive_retrieval(feats, labels, feats, labels, metric, k, self_search=True)
    assert result["map"] == pytest.approx(expected["map"], abs=1e-12)
    if k is None:
        assert set(result) == {"map"}
    else:
        assert result["precision_at_k"] == pytest.approx(expected["precision_at_k"], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("metric,dim", [("cosine", 3), ("hamming", 5)])
@pytest.mark.parametrize("k", [None, 3])
def test_query_database_retrieval_matches_naive_ap(seed, metric, dim, k):
    feats, labels = _retrieval_data(metric, 30, dim, 3, seed)
    query, database = feats[:8], feats[8:]
    result = retrieval_map(query, labels[:8], database, labels[8:], metric=metric, k=k)
    expected = _naive_retrieval(query, labels[:8], database, labels[8:], metric, k, False)
    assert result["map"] == pytest.approx(expected["map"], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_hot_retrieval_matches_naive_ap(seed):
    g = _generator(seed)
    feats = torch.randn(20, 4, generator=g, dtype=torch.float64)
    labels = torch.rand(20, 3, generator=g) < 0.4
    labels[:, 0] |= ~labels.any(dim=1)  # every item has a label
    result = retrieval_map(feats, labels, k=6)
    expected = _naive_retrieval(feats, labels.int(), feats, labels.int(), "cosine", 6, True)
    assert result["map"] == pytest.approx(expected["map"], abs=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "hamming"])
def test_duplicated_items_give_perfect_map(metric):
    g = _generator(5)
    if metric == "cosine":
        items = torch.randn(20, 8, generator=g)
    else:
        items = torch.randint(0, 2, (20, 32), generator=g).bool()
        assert len(items.unique(dim=0)) == 20
    labels = torch.arange(20)  # only an item's two copies are relevant to it
    database, database_labels = torch.cat([items, items]), torch.cat([labels, labels])
    assert retrieval_map(items, labels, database, database_labels, metric=metric)["map"] == 1.0
    at_2 = retrieval_map(items, labels, database, database_labels, metric=metric, k=2)
    assert at_2 == {"map": 1.0, "precision_at_k": 1.0}
    at_4 = retrieval_map(items, labels, database, database_labels, metric=metric, k=4)
    assert at_4 == {"map": 1.0, "precision_at_k": 0.5}


def test_hamming_ties_rank_by_database_index():
    query = torch.tensor([[0, 0]])
    database = torch.tensor([[1, 1], [1, 1]])  # both at distance 2
    # Irrelevant item first: the relevant one is found at rank 2, AP = 1/2.
    assert retrieval_map(query, torch.tensor([0]), database, torch.tensor([1, 0]),
                         metric="hamming")["map"] == 0.5
    assert retrieval_map(query, torch.tensor([0]), database, torch.tensor([0, 1]),
                         metric="hamming")["map"] == 1.0


def test_queries_without_relevant_items_are_left_out():
    database = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.1], [1.0, 0.2]])
    # The first query ranks its one relevant item second: AP = 1/2. The second query's class 7
    # is absent from the database, so it has no AP and is left out (counted as 0, mAP = 1/4).
    result = retrieval_map(query, torch.tensor([1, 7]), database, torch.tensor([0, 1]))
    assert result["map"] == 0.5
    # Precision@1 is defined for both queries, and both miss at rank 1.
    at_1 = retrieval_map(query, torch.tensor([1, 7]), database, torch.tensor([0, 1]), k=1)
    assert at_1 == {"map": 0.0, "precision_at_k": 0.0}
    assert math.isnan(retrieval_map(query, torch.tensor([7, 7]), database,
                                    torch.tensor([0, 1]))["map"])


@pytest.mark.parametrize("metric", ["cosine", "hamming"])
def test_retrieval_chunked_equals_unchunked(metric):
    feats, labels = _retrieval_data(metric, 60, 6, 5, seed=6)
    whole = retrieval_map(feats, labels, metric=metric, k=10, memory_budget_mb=1024.0)
    chunked = retrieval_map(feats, labels, metric=metric, k=10, memory_budget_mb=1e-6)
    assert chunked == pytest.approx(whole, abs=1e-12)


def test_hamming_distance_counts_differing_bits():
    a = torch.tensor([[0, 0, 0, 0], [1, 0, 1, 1]])
    b = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 0, 0]])
    expected = [[sum(x != y for x, y in zip(u, v, strict=True)) for v in b.tolist()]
                for u in a.tolist()]
    assert hamming_distance(a, b).tolist() == expected
    with pytest.raises(ValueError, match="0 or 1"):
        hamming_distance(torch.tensor([[0.5, 1.0]]), b[:, :2])


@pytest.mark.parametrize("k", [None, 5])
def test_map_vs_bits_is_retrieval_on_the_first_bits(k):
    codes, labels = _retrieval_data("hamming", 40, 12, 4, seed=7)
    result = map_vs_bits(codes, labels, bits_kept=(4, 8, 100), k=k)
    assert list(result) == [4, 8, 12]  # 100 > K is skipped, K is always included
    for b, value in result.items():
        assert value == retrieval_map(codes[:, :b], labels, metric="hamming", k=k)["map"]


def test_map_vs_bits_searches_a_database_when_given():
    query, query_labels = _retrieval_data("hamming", 15, 12, 4, seed=10)
    database, database_labels = _retrieval_data("hamming", 30, 12, 4, seed=11)
    result = map_vs_bits(query, query_labels, bits_kept=(4, 8), database=database,
                         database_labels=database_labels)
    for b, value in result.items():
        naive = _naive_retrieval(query[:, :b], query_labels, database[:, :b], database_labels,
                                 "hamming", None, self_search=False)
        assert value == pytest.approx(naive["map"], abs=1e-9)


# ---- geometry -----------------------------------------------------------------------------------


def test_spectrum_matches_numpy():
    feats = torch.randn(50, 6, generator=_generator(8)) @ torch.randn(6, 6, generator=_generator(9))
    eigenvalues = spectrum(feats)
    assert eigenvalues.dtype == torch.float64
    expected = np.sort(np.linalg.eigvalsh(np.cov(feats.double().numpy(), rowvar=False)))[::-1]
    np.testing.assert_allclose(eigenvalues.numpy(), expected, rtol=1e-10, atol=1e-12)
    # Their sum is the total variance.
    assert float(eigenvalues.sum()) == pytest.approx(float(feats.double().var(dim=0).sum()))


def test_isotropic_gaussian_has_full_effective_dimension():
    result = geometry(torch.randn(20000, 32, generator=_generator(10)))
    assert result["effective_dim"] == pytest.approx(32, rel=0.05)
    assert result["effective_rank"] == pytest.approx(32, rel=0.05)
    assert result["explained_variance"][-1] == pytest.approx(1.0)
    assert len(result["explained_variance"]) == 32


def test_rank_r_features_have_effective_dimension_r():
    rank, dim = 5, 32
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=_generator(11)))[0].T  # (r, D)
    feats = torch.randn(20000, rank, generator=_generator(12)) @ basis
    result = geometry(feats)
    assert result["effective_dim"] == pytest.approx(rank, rel=0.05)
    assert result["effective_rank"] == pytest.approx(rank, rel=0.05)
    explained = result["explained_variance"]
    assert explained[rank - 2] < 0.9
    assert explained[rank - 1] == pytest.approx(1.0, abs=1e-6)
    assert all(a <= b + 1e-12 for a, b in zip(explained, explained[1:], strict=False))


def test_collapsed_features_have_zero_dimension():
    result = geometry(torch.ones(10, 4))
    assert result == {"effective_dim": 0.0, "effective_rank": 0.0,
                      "explained_variance": [1.0] * 4}


def test_as_bits_checks_shape_and_values_and_keeps_the_dtype_asked():
    codes = torch.tensor([[True, False], [False, False]])
    assert as_bits(codes).dtype == torch.float32
    assert as_bits(codes, torch.float64).tolist() == [[1.0, 0.0], [0.0, 0.0]]
    for bad in (torch.zeros(3), torch.zeros(0, 4)):
        with pytest.raises(ValueError, match=r"non-empty \(N, K\)"):
            as_bits(bad)
    with pytest.raises(ValueError, match="0 or 1"):
        as_bits(torch.tensor([[2, 0]]))
