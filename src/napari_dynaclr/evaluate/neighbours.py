"""Nearest neighbours in embedding space, and representative samples of a selection (the GUI's gallery).

:class:`NeighbourIndex` is exact (brute force) up to ``exact_limit`` cells (100,000) and approximate above
(``pynndescent.NNDescent``, seeded; imported only then: it loads numba and compiles on first use). Cosine distance
is ``1 − cos``; the rows are L2-normalised once, so a cosine query is one matrix-vector product, and the approximate
index searches the unit rows with the Euclidean distance, which ranks exactly as cosine (``|a − b|² = 2 (1 − cos)``).
Rows with NaN/Inf (or all-zero rows under cosine) are not indexed and are never returned.
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
        clean = X if ok.all() else np.where(ok[:, None], X, 0)
        norms = np.sqrt(np.einsum("ij,ij->i", clean, clean))
        ok &= norms > 0
        X = clean / np.where(ok, norms, 1)[:, None]
    return np.ascontiguousarray(X), ok


class NeighbourIndex:
    """k-nearest-neighbour search over the rows of *X* (row positions in and out).

    ``NeighbourIndex(X, metric="cosine")``; ``query(row, k)`` → (rows, distances) of the *k* nearest other rows,
    nearest first; ``query_vector(v, k)`` for any vector. ``exact`` says which search was built.

    Exact search is a brute-force scan of the float32 rows (one matrix-vector product, as scikit-learn's
    brute-force ``NearestNeighbors`` does, without its per-query overhead); the best ``k + 32`` candidates are
    re-ranked with float64 distances, so the order and the distances returned are exact (ties: lower row first).
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
            self._sq = np.einsum("ij,ij->i", self._data, self._data) if metric == "euclidean" else None
        else:
            import pynndescent

            self._nn = pynndescent.NNDescent(self._data, metric="euclidean", random_state=random_state,
                                             n_jobs=n_jobs, low_memory=True)
            self._nn.prepare()

    def _distances(self, vector: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Distances from *vector* to the indexed rows *idx*, in float64."""
        a = np.asarray(vector, dtype=np.float64).reshape(-1)
        B = self._data[idx].astype(np.float64)
        if self.metric == "cosine":
            return np.clip(1.0 - B @ a, 0.0, 2.0)
        return np.linalg.norm(B - a, axis=1)

    def _search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(index positions, float64 distances) of the *k* nearest indexed rows, nearest first."""
        n = len(self._rows)
        k = min(k, n)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0)
        if self.exact:
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
            score = -(self._data @ v) if self.metric == "cosine" else self._sq - 2 * (self._data @ v)
            m = min(n, k + 32)
            cand = np.argpartition(score, m - 1)[:m] if m < n else np.arange(n)
        else:
            i, _ = self._nn.query(np.asarray(vector, dtype=np.float32).reshape(1, -1), k=min(n, k + 8))
            cand = i[0][i[0] >= 0]
        d = self._distances(vector, cand)
        order = np.lexsort((cand, d))[:k]
        return cand[order], d[order]

    def query(self, row: int, k: int = 10, include_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The *k* nearest rows to *row* (itself left out unless *include_self*) and their distances."""
        if not 0 <= row < self.n_rows:
            raise ConfigError(f"row {row} is outside the {self.n_rows} indexed rows")
        p = self._pos[row]
        if p < 0:
            return np.zeros(0, np.int64), np.zeros(0)
        i, d = self._search(self._data[p], k + (0 if include_self else 1))
        if not include_self:
            keep = i != p
            i, d = i[keep][:k], d[keep][:k]
        return self._rows[i], d

    def query_vector(self, vector: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The *k* nearest rows to an embedding vector (e.g. a selection's centroid)."""
        v, ok = _prepared(np.asarray(vector).reshape(1, -1), self.metric)
        if not ok[0]:
            return np.zeros(0, np.int64), np.zeros(0)
        i, d = self._search(v[0], k)
        return self._rows[i], d


def _unit(X: np.ndarray, metric: str, dtype=np.float64) -> np.ndarray:
    X = np.asarray(X, dtype=dtype)
    if metric == "cosine":
        n = np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]
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
                          random_state: int = 42, max_fit: int = 2_000, n_pca: int = 32) -> np.ndarray:
    """At most *n* rows of the selection *rows* that cover it, ordered by distance to its centroid.

    A selection of *n* rows or fewer is returned whole. Otherwise the selection (unit rows for cosine) is projected
    on its first *n_pca* principal components and split by k-means (k = *n*), both fitted on at most *max_fit* rows
    drawn with *random_state*; the member nearest each cluster centre represents it, so dense regions and outlying
    groups are both shown. Deterministic (same selection, same rows, whatever its order).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if n < 1:
        raise ConfigError(f"sample size must be >= 1, got {n}")
    V = _unit(np.asarray(X)[rows], metric, np.float32)
    finite = np.isfinite(V).all(axis=1)
    rows, V = rows[finite], V[finite]
    if len(rows) <= n:
        return order_by_centroid(X, rows, metric)[0]
    rng = np.random.default_rng(random_state)
    fit = V if len(V) <= max_fit else V[np.sort(rng.choice(len(V), max_fit, replace=False))]
    n_comp = min(n_pca, fit.shape[1], len(fit) - 1)
    pca = PCA(n_components=n_comp, svd_solver="randomized", iterated_power=2, random_state=random_state).fit(fit)
    P, F = pca.transform(V), pca.transform(fit)
    km = KMeans(n_clusters=n, n_init=1, random_state=random_state).fit(F)
    labels = km.predict(P)
    d = np.linalg.norm(P - km.cluster_centers_[labels], axis=1)
    chosen = []
    for c in range(n):
        members = np.flatnonzero(labels == c)
        if len(members):
            chosen.append(rows[members[np.lexsort((rows[members], d[members]))[0]]])
    return order_by_centroid(X, np.array(chosen, dtype=np.int64), metric)[0]
