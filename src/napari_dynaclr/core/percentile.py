"""``np.percentile(x, q)`` (method ``linear``, over the whole array) without partitioning the whole array.

MONAI's ``ScaleIntensityRangePercentilesd`` (VisCy's percentile scaling) calls ``np.percentile`` on the whole
batch of a channel: 24.6 M values for 32 cells of a 2-channel, 30-slice, 160-px 3-D plate. numpy copies the
array and partitions it (≈ 0.3 s per batch on one core). The result only depends on two order statistics per
``q`` (the neighbours of the virtual index ``(n - 1) * q / 100``). :func:`percentiles` finds them exactly:

1. a uniform sample (65,536 values, fixed seed) brackets each needed rank between two sample values ``lo`` and
   ``hi`` with a wide margin;
2. one pass counts the values below ``lo`` and gathers those in ``[lo, hi]`` (a few thousand);
3. the ranks are selected in that small set with ``np.partition``;
4. the linear interpolation is numpy's own ``_lerp`` formula, with the same dtypes (float32 neighbours,
   float64 weights), so the result is bit-identical to ``np.percentile``.

When a bracket misses its rank (adversarial data), when the counts show NaN values, or for small arrays, it
falls back to ``np.percentile`` itself: the answer is always exact. The tests compare it with
``np.percentile`` bit for bit on random, tied, constant, signed and heavy-tailed data.

Numpy only (no torch): the batch normalisation (:mod:`napari_dynaclr.predict.transforms`) calls it.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE = 65_536  # sample size of the bracket step
SMALL = 1_000_000  # below this, np.percentile directly (MONAI uses torch.quantile there anyway)


def percentiles(x: np.ndarray, q) -> np.ndarray:
    """``np.percentile(x, q)`` (float64, one value per *q*) of a float32 array of any shape and strides."""
    q = np.asarray(q)
    x = np.asarray(x)
    if x.dtype != np.float32 or x.size < SMALL or q.ndim != 1:
        return np.percentile(x, q)
    n = x.size
    quantiles = np.true_divide(q, 100)
    if not ((quantiles >= 0) & (quantiles <= 1)).all():
        return np.percentile(x, q)  # numpy's own error message
    virtual = (n - 1) * quantiles
    prev = np.floor(virtual)
    nxt = prev + 1
    top = virtual >= n - 1
    prev[top] = nxt[top] = n - 1
    prev_i, next_i = prev.astype(np.intp), nxt.astype(np.intp)
    values = _order_statistics(x, sorted(set(prev_i.tolist()) | set(next_i.tolist())))
    if values is None:
        return np.percentile(x, q)
    a = np.array([values[i] for i in prev_i.tolist()], dtype=np.float32)
    b = np.array([values[i] for i in next_i.tolist()], dtype=np.float32)
    gamma = np.asanyarray(virtual - np.where(top, -1, prev), dtype=virtual.dtype)
    # numpy's _lerp: a + (b - a) * t, and b - (b - a) * (1 - t) where t >= 0.5
    diff_b_a = b - a
    out = np.add(a, diff_b_a * gamma)
    np.subtract(b, diff_b_a * (1 - gamma), out=out, where=gamma >= 0.5, casting="unsafe", dtype=out.dtype)
    return out


def _order_statistics(x: np.ndarray, ranks: list[int]) -> dict[int, np.float32] | None:
    """The values of rank *ranks* (0-based, ascending order) of *x*, or None when a bracket missed or the
    array holds NaN (the caller then partitions the whole array)."""
    n = x.size
    sample = np.sort(_sample(x))
    m = sample.size
    margin = int(3 * math.sqrt(m)) + 16  # ≥ 6 standard deviations of a sample rank: misses are rare
    found: dict[int, np.float32] = {}
    for group in _groups(ranks, n, m, margin):
        p_lo = int(group[0] * (m - 1) / max(n - 1, 1)) - margin
        p_hi = int(group[-1] * (m - 1) / max(n - 1, 1)) + margin + 1
        lo = sample[p_lo] if p_lo > 0 else np.float32(-np.inf)
        hi = sample[p_hi] if p_hi < m - 1 else np.float32(np.inf)
        ge = x >= lo  # NaN compares false: counted below *and* above
        le = x <= hi
        below = n - int(np.count_nonzero(ge))
        above = n - int(np.count_nonzero(le))
        inside = x[np.logical_and(ge, le, out=ge)]
        if below + inside.size + above != n:
            return None  # a NaN is counted twice
        k = [r - below for r in group]
        if k[0] < 0 or k[-1] >= inside.size:
            return None
        part = np.partition(inside, k)
        for r, kk in zip(group, k, strict=True):
            found[r] = part[kk]
    return found


def _groups(ranks: list[int], n: int, m: int, margin: int) -> list[list[int]]:
    """Ranks close enough to share one bracket."""
    groups: list[list[int]] = []
    width = max(1, int(margin * max(n - 1, 1) / max(m - 1, 1)))
    for r in ranks:
        if groups and r - groups[-1][-1] <= width:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def _sample(x: np.ndarray) -> np.ndarray:
    """SAMPLE values drawn uniformly (fixed seed, so runs repeat) from the whole array, any strides, no copy
    of the array."""
    flat = np.random.default_rng(0).integers(0, x.size, SAMPLE)
    return x[np.unravel_index(flat, x.shape)]
