"""Nearest neighbours (exact against a brute-force reference, the approximate path, NaN rows) and the gallery's
representative sample / centroid order."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dynaclr.errors import ConfigError
from napari_dynaclr.evaluate.neighbours import NeighbourIndex, order_by_centroid, representative_sample


def _brute(X, row, k, metric):
    X = X.astype(np.float64)
    if metric == "cosine":
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
        d = 1 - U @ U[row]
    else:
        d = np.linalg.norm(X - X[row], axis=1)
    d[row] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    return order, d[order]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_index_matches_brute_force(metric):
    X = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
    index = NeighbourIndex(X, metric=metric)
    assert index.exact
    for row in (0, 17, 1999):
        rows, dist = index.query(row, k=10)
        want_rows, want_dist = _brute(X, row, 10, metric)
        assert rows.tolist() == want_rows.tolist() and row not in rows
        np.testing.assert_allclose(dist, want_dist, rtol=0, atol=1e-6)
        assert (np.diff(dist) >= -1e-12).all()
    rows, dist = index.query(5, k=3, include_self=True)
    assert rows[0] == 5 and dist[0] == pytest.approx(0, abs=1e-6)
    vrows, _ = index.query_vector(X[5], k=3)
    assert vrows.tolist() == rows.tolist()


def test_nonfinite_and_zero_rows_are_never_returned():
    X = np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32)
    X[3] = np.nan
    X[4] = 0
    index = NeighbourIndex(X, metric="cosine")
    rows, _ = index.query(0, k=299)
    assert len(rows) == 297 and not {0, 3, 4} & set(rows.tolist())
    assert len(index.query(3, k=5)[0]) == 0
    with pytest.raises(ConfigError, match="outside"):
        index.query(300)
    with pytest.raises(ConfigError, match="metric"):
        NeighbourIndex(X, metric="manhattan")


@pytest.mark.slow  # pynndescent's first use compiles with numba: ~2.5 min on 2 shared cores
def test_approximate_index_finds_most_true_neighbours():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((20, 32)) * 5
    X = (centres[rng.integers(0, 20, 3000)] + rng.standard_normal((3000, 32))).astype(np.float32)
    index = NeighbourIndex(X, metric="cosine", exact=False)
    assert not index.exact
    recall = []
    for row in range(0, 3000, 150):
        rows, dist = index.query(row, k=10)
        want, want_dist = _brute(X, row, 10, "cosine")
        recall.append(len(set(rows.tolist()) & set(want.tolist())) / 10)
        assert row not in rows
        np.testing.assert_allclose(dist, np.sort(dist))
    assert np.mean(recall) >= 0.9


def _blobs(n_per=100, k=8, d=32, seed=3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 10
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + rng.standard_normal((len(labels), d))).astype(np.float32), labels


def test_representative_sample_covers_the_selection():
    X, labels = _blobs()
    selection = np.flatnonzero(labels < 6)
    sample = representative_sample(X, selection, n=6, metric="euclidean")
    assert len(sample) == 6 and set(sample) <= set(selection)
    assert sorted(labels[sample].tolist()) == [0, 1, 2, 3, 4, 5]  # one per blob
    again = representative_sample(X, selection[::-1], n=6, metric="euclidean")
    assert again.tolist() == sample.tolist()  # deterministic, whatever the selection's order
    ordered, dist = order_by_centroid(X, sample, metric="euclidean")
    assert ordered.tolist() == sample.tolist() and (np.diff(dist) >= 0).all()
    big = representative_sample(X, np.arange(len(X)), metric="cosine")
    assert len(big) == 64 and len(set(big.tolist())) == 64


def test_small_selection_is_returned_whole_in_centroid_order():
    X, _ = _blobs(n_per=5)
    rows = np.array([7, 3, 30, 12])
    sample = representative_sample(X, rows, n=64)
    ordered, dist = order_by_centroid(X, rows)
    assert sorted(sample.tolist()) == sorted(rows.tolist()) and sample.tolist() == ordered.tolist()
    assert (np.diff(dist) >= 0).all()
    X[3] = np.nan
    ordered, dist = order_by_centroid(X, rows)
    assert ordered[-1] == 3 and np.isnan(dist[-1])
    assert 3 not in representative_sample(X, rows)
