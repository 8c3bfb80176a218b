"""The MMD statistic of VisCy, bit for bit, without VisCy's quadratic ``cdist``.

VisCy (``viscy_utils.evaluation.mmd``, commit 4b62365):

- ``median_heuristic(X, Y)``: the pool ``[X; Y]`` as float32, 1,000 rows drawn by ``default_rng(0).choice`` when
  it is larger, the median of the strict upper triangle of ``scipy cdist(pool, pool, "sqeuclidean")`` (float64)
  plus 1e-12 — a squared bandwidth.
- The kernel: ``exp(-d² / (2·bw))`` with the float64 argument cast to float32 and a float32 ``exp``; diagonal 0.
- ``mmd_permutation_test``: for 0/1 float32 label rows ``z`` (first ``n`` positions for the observed split, the
  first ``n`` positions of ``default_rng(seed).permutation(N)`` for each null draw), the float32 sums
  ``z·(K zᵀ)``, and the unbiased MMD² ``sXX/(n(n−1)) + sYY/(m(m−1)) − 2·sXY/(nm)``; ``p = (#{null ≥ obs} + 1) /
  (n_permutations + 1)``.

``cdist`` sums ``(x−y)²`` one feature after the other: 8 s for 4,000 × 768 on one core. Here the squared distances
come from one float64 matrix product of the centred pool (:mod:`.sqdist`, shared with the pseudotime's DTW),
with a rigorous bound on their error; only the entries whose float32 kernel argument (or, for the median, whose
rank) that bound leaves undecided — a few hundred of millions — are computed again with ``cdist`` itself. The
kernel, the median and therefore every later float32 sum are VisCy's bits. The sums reuse ``K (1−z)ᵀ`` (VisCy
computes it twice): two float32 products instead of three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from napari_dynaclr.evaluate.sqdist import ProductDistances

#: VisCy's cap on the pooled kernel size (n + m)
MAX_POOL = 20_000
BANDWIDTH_SUBSAMPLE = 1000
_U = 2.0 ** -53  # unit roundoff of float64


@dataclass
class PermutationTest:
    """One MMD permutation test: VisCy's ``(mmd2, p_value, null)`` and the bandwidth used."""

    mmd2: float
    p_value: float
    null: np.ndarray  # float32, one value per permutation
    bandwidth: float

    @property
    def activity_zscore(self) -> float:
        """VisCy's ``(mmd2 − mean(null)) / (std(null) + 1e-12)``, evaluated in float32 as VisCy's numpy does."""
        return float((self.mmd2 - self.null.mean()) / (self.null.std() + 1e-12))

    @property
    def effect_size(self) -> float:
        return self.mmd2 / self.bandwidth if self.bandwidth > 0 else float("nan")


def _pool(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(X), np.asarray(Y)], axis=0).astype(np.float32)


class _Distances(ProductDistances):
    """The pool's squared distances through :class:`~napari_dynaclr.evaluate.sqdist.ProductDistances` (a float64
    product of the centred rows, ``|d² − cdist| <= factor · t``); :meth:`exact` gives ``cdist``'s own values."""

    def __init__(self, pool: np.ndarray):
        super().__init__(pool)
        self.pool = pool

    def exact(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``cdist(pool, pool, "sqeuclidean")[i, j]``, computed by ``cdist`` one row of the pool at a time."""
        from scipy.spatial.distance import cdist

        out = np.empty(len(i), dtype=np.float64)
        order = np.argsort(i, kind="stable")
        i_sorted = i[order]
        starts = np.flatnonzero(np.r_[True, i_sorted[1:] != i_sorted[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(i_sorted)]):
            sel = order[s:e]
            row = int(i_sorted[s])
            out[sel] = cdist(self.pool[row:row + 1], self.pool[j[sel]], metric="sqeuclidean")[0]
        return out


def median_heuristic(X: np.ndarray, Y: np.ndarray, subsample: int = BANDWIDTH_SUBSAMPLE) -> float:
    """VisCy's ``median_heuristic`` (the squared bandwidth σ²), the same float64 value."""
    pool = _pool(X, Y)
    if len(pool) > subsample:
        pool = pool[np.random.default_rng(0).choice(len(pool), subsample, replace=False)]
    n = len(pool)
    if n < 2:
        return float(np.median(np.zeros(0))) + 1e-12  # VisCy's median of nothing: NaN (with numpy's warning)
    dist = _Distances(pool)
    d2, t = dist.block(slice(None), slice(None))
    iu = np.triu_indices(n, k=1)
    v = d2[iu]
    e = t[iu] * dist.factor + 1e-300
    m = len(v)
    ks = (m // 2,) if m % 2 else (m // 2 - 1, m // 2)  # the order statistic(s) np.median averages
    lo = np.partition(v - e, ks)[list(ks)]
    hi = np.partition(v + e, ks)[list(ks)]
    below = int(np.count_nonzero(v + e < lo[0]))
    cand = np.flatnonzero((v + e >= lo[0]) & (v - e <= hi[-1]))
    exact = np.sort(dist.exact(iu[0][cand], iu[1][cand]))
    picked = exact[[k - below for k in ks]]
    return float(np.mean(picked)) + 1e-12


def rbf_kernel(pool: np.ndarray, bandwidth: float, cancel: Callable[[], None] | None = None) -> np.ndarray:
    """VisCy's float32 kernel of the pool with itself (``exp(-d²/(2·bw))``), the diagonal set to 0."""
    pool = np.asarray(pool, dtype=np.float32)
    n = len(pool)
    K = np.empty((n, n), dtype=np.float32)
    if n == 0:
        return K
    dist = _Distances(pool)
    two_bw = 2.0 * bandwidth
    # arg = −d²/(2·bw) from the approximate d²: off by <= factor·t/(2·bw) plus the rounding of this division
    # (|arg| <= 2t/(2·bw)); an entry whose interval [arg − e, arg + e] rounds to one float32 is VisCy's
    scale = -1.0 / two_bw
    spread = (dist.factor + 8.0 * _U) / abs(two_bw)
    step = int(np.clip(4_000_000 // n, 64, 2048))
    for r0 in range(0, n, step):
        if cancel is not None:
            cancel()
        r1 = min(n, r0 + step)
        rows, cols = slice(r0, r1), slice(r0, n)
        arg, t = dist.block(rows, cols)
        arg *= scale
        t *= spread
        t += 1e-300
        a32 = arg.astype(np.float32)
        lo = (arg - t).astype(np.float32)
        t += arg
        undecided = lo != t.astype(np.float32)
        np.fill_diagonal(undecided, False)  # the diagonal is set to 0 below
        ii, jj = np.nonzero(undecided)
        if len(ii):
            exact = dist.exact(ii + r0, jj + r0)
            a32[ii, jj] = (-exact / two_bw).astype(np.float32)
        block = np.exp(a32)
        K[rows, cols] = block
        K[r1:, rows] = block[:, r1 - r0:].T
    np.fill_diagonal(K, 0.0)
    return K


def _mmd2_of_labels(K: np.ndarray, z: np.ndarray) -> np.ndarray:
    """VisCy's float32 unbiased MMD² for each 0/1 label row of *z* (the same products, sums and order)."""
    n_total = K.shape[0]
    nz = z.sum(axis=1)
    mz = n_total - nz
    w = 1 - z
    Kz = K @ z.T
    Kw = K @ w.T
    s_xx = (z * Kz.T).sum(axis=1)
    s_yy = (w * Kw.T).sum(axis=1)
    s_xy = (z * Kw.T).sum(axis=1)
    kxx = s_xx / (nz * (nz - 1))
    kyy = s_yy / (mz * (mz - 1))
    kxy = s_xy / (nz * mz)
    return kxx + kyy - 2.0 * kxy


def null_labels(n: int, n_total: int, n_permutations: int, seed: int) -> np.ndarray:
    """The null label rows: ``default_rng(seed).permutation(N)`` once per permutation, X = its first *n* places."""
    rng = np.random.default_rng(seed)
    z = np.zeros((n_permutations, n_total), dtype=np.float32)
    if n_permutations:
        perms = np.stack([rng.permutation(n_total) for _ in range(n_permutations)])
        z[np.arange(n_permutations)[:, None], perms[:, :n]] = 1.0
    return z


def mmd_permutation_test(X: np.ndarray, Y: np.ndarray, n_permutations: int = 1000, bandwidth: float | None = None,
                         seed: int = 42, cancel: Callable[[], None] | None = None) -> PermutationTest:
    """VisCy's ``mmd_permutation_test`` (observed MMD², p-value, float32 null) with its exact numbers.

    Raises ``ValueError`` when ``len(X) + len(Y)`` exceeds :data:`MAX_POOL` (as VisCy).
    """
    if bandwidth is None:
        bandwidth = median_heuristic(X, Y)
    n, m = len(X), len(Y)
    if n + m > MAX_POOL:
        raise ValueError(f"the pooled kernel would be {n + m} x {n + m}; subsample so that n + m <= {MAX_POOL}")
    K = rbf_kernel(_pool(X, Y), bandwidth, cancel)
    z_obs = np.zeros((1, n + m), dtype=np.float32)
    z_obs[0, :n] = 1.0
    observed = float(_mmd2_of_labels(K, z_obs)[0])
    if cancel is not None:
        cancel()
    null = _mmd2_of_labels(K, null_labels(n, n + m, n_permutations, seed))
    p_value = float((np.sum(null >= observed) + 1) / (n_permutations + 1))
    return PermutationTest(mmd2=observed, p_value=p_value, null=null, bandwidth=float(bandwidth))
