"""Nearest neighbours in embedding space, and representative samples of a selection (the GUI's gallery).

:class:`NeighbourIndex` is exact (scikit-learn ``NearestNeighbors``, brute force) up to ``exact_limit`` cells
(100,000) and approximate above (``pynndescent.NNDescent``, seeded; imported only then: it loads numba).
Cosine distance is ``1 − cos``; for the exact index the rows are L2-normalised once and searched with the
Euclidean distance, which ranks exactly as cosine (``|a − b|² = 2 (1 − cos)`` for unit rows) and avoids
normalising the whole matrix on every query. Rows with NaN/Inf (or all-zero rows under cosine) are not indexed
and are never returned.
"""

from __future__ import annotations

import numpy as np

from napari_dynaclr.errors import ConfigError

NEIGHBOUR_METRICS = ("cosine", "euclidean")
EXACT_LIMIT = 100_000
GALLERY_SIZE = 64


def _prepared(X: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows as float32 ready for a Euclidean search, boolean mask of usable rows)."""
    X = np.asarray(X, dtype=np.float32)
    ok = np.isfinite(X).all(axis=1)
    if metric == "cosine":
        norms = np.linalg.norm(np.where(ok[:, None], X, 0), axis=1)
        ok &= norms > 0
        X = X / np.where(ok, norms, 1)[:, None]
    return np.ascontiguousarray(X), ok


class NeighbourIndex:
    """k-nearest-neighbour search over the rows of *X* (row positions in and out).

    ``NeighbourIndex(X, metric="cosine")``; ``query(row, k)`` → (rows, distances) of the *k* nearest other rows,
    nearest first; ``query_vector(v, k)`` for any vector. ``exact`` says which search was built.
    """

    def __init__(self, X: np.ndarray, metric: str = "cosine", exact: bool | None = None,
                 exact_limit: int = EXACT_LIMIT, random_state: int = 42, n_jobs: int | None = None):
        if metric not in NEIGHBOUR_METRICS:
            raise ConfigError(f"unknown neighbour metric {metric!r}; use one of {', '.join(NEIGHBOUR_METRICS)}")
        X = np.asarray(X)
        if X.ndim != 2 or len(X) == 0:
            raise ConfigError(f"need a non-empty (cells, features) array, got shape {X.shape}")
        self.metric = metric
        self.n_rows = len(X)
        data, ok = _prepared(X, metric)
        self._rows = np.flatnonzero(ok)  # index position -> row
        if len(self._rows) == 0:
            raise ConfigError("no row of the embeddings is finite (and non-zero for cosine): nothing to index")
        self._pos = np.full(len(X), -1, dtype=np.int64)
        self._pos[self._rows] = np.arange(len(self._rows))
        self._data = data if ok.all() else data[ok]
        self.exact = len(self._rows) <= exact_limit if exact is None else bool(exact)
        if self.exact:
            from sklearn.neighbors import NearestNeighbors

            self._nn = NearestNeighbors(algorithm="brute", metric="euclidean", n_jobs=n_jobs).fit(self._data)
        else:
            import pynndescent

            self._nn = pynndescent.NNDescent(self._data, metric="euclidean", random_state=random_state,
                                             n_jobs=n_jobs, low_memory=True)
            self._nn.prepare()

    def _exact_distance(self, vector: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The k distances recomputed in float64 (the search itself runs in float32)."""
        a = np.asarray(vector, dtype=np.float64).reshape(-1)
        B = self._data[idx].astype(np.float64)
        if self.metric == "cosine":
            return np.clip(1.0 - B @ a, 0.0, 2.0)
        return np.linalg.norm(B - a, axis=1)

    def _search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self._rows))
        if self.exact:
            d, i = self._nn.kneighbors(vectors, n_neighbors=k)
        else:
            i, d = self._nn.query(vectors, k=k)
        return i, d

    def query(self, row: int, k: int = 10, include_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The *k* nearest rows to *row* (itself left out unless *include_self*) and their distances."""
        if not 0 <= row < self.n_rows:
            raise ConfigError(f"row {row} is outside the {self.n_rows} indexed rows")
        p = self._pos[row]
        if p < 0:
            return np.zeros(0, np.int64), np.zeros(0)
        i, d = self._search(self._data[p:p + 1], k + (0 if include_self else 1))
        rows, dist = self._rows[i[0]], self._exact_distance(self._data[p], i[0])
        if not include_self:
            keep = rows != row
            rows, dist = rows[keep][:k], dist[keep][:k]
        return rows, dist

    def query_vector(self, vector: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The *k* nearest rows to an embedding vector (e.g. a selection's centroid)."""
        v, ok = _prepared(np.asarray(vector).reshape(1, -1), self.metric)
        if not ok[0]:
            return np.zeros(0, np.int64), np.zeros(0)
        i, d = self._search(v, k)
        return self._rows[i[0]], self._exact_distance(v[0], i[0])


def _unit(X: np.ndarray, metric: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        n = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(n > 0, n, 1)
    return X


def order_by_centroid(X: np.ndarray, rows, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """*rows* ordered by distance to their centroid (nearest first; ties by row), with the distances.
    Cosine: the centroid of the unit rows, distance ``1 − cos``. Rows with NaN/Inf go last (distance NaN)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return rows, np.zeros(0)
    V = _unit(np.asarray(X)[rows], metric)
    ok = np.isfinite(V).all(axis=1)
    dist = np.full(len(rows), np.nan)
    if ok.any():
        c = V[ok].mean(axis=0)
        if metric == "cosine":
            nc = np.linalg.norm(c)
            dist[ok] = 1.0 - V[ok] @ (c / nc) if nc > 0 else 1.0
        else:
            dist[ok] = np.linalg.norm(V[ok] - c, axis=1)
    order = np.lexsort((rows, np.where(np.isnan(dist), np.inf, dist)))
    return rows[order], dist[order]


def representative_sample(X: np.ndarray, rows, n: int = GALLERY_SIZE, metric: str = "cosine",
                          random_state: int = 42, max_fit: int = 20_000) -> np.ndarray:
    """At most *n* rows of the selection *rows* that cover it, ordered by distance to its centroid.

    A selection of *n* rows or fewer is returned whole. Otherwise k-means (k = *n*, seeded, on the unit rows for
    cosine; fitted on at most *max_fit* rows drawn with the same seed) splits the selection, and the member nearest
    each cluster centre represents it — so dense regions and outlying groups are both shown. Deterministic.
    """
    from sklearn.cluster import KMeans

    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if n < 1:
        raise ConfigError(f"sample size must be >= 1, got {n}")
    V = _unit(np.asarray(X)[rows], metric)
    finite = np.isfinite(V).all(axis=1)
    rows, V = rows[finite], V[finite]
    if len(rows) <= n:
        return order_by_centroid(X, rows, metric)[0]
    rng = np.random.default_rng(random_state)
    fit = V if len(V) <= max_fit else V[np.sort(rng.choice(len(V), max_fit, replace=False))]
    km = KMeans(n_clusters=n, n_init=1, random_state=random_state).fit(fit.astype(np.float32))
    labels = km.predict(V.astype(np.float32))
    centres = km.cluster_centers_.astype(np.float64)
    d = np.linalg.norm(V - centres[labels], axis=1)
    chosen = []
    for c in range(n):
        members = np.flatnonzero(labels == c)
        if len(members):
            chosen.append(rows[members[np.lexsort((rows[members], d[members]))[0]]])
    return order_by_centroid(X, np.array(chosen, dtype=np.int64), metric)[0]
