"""Frame costs and whole DTW distances, with numpy's bits, through numba when it is there.

A frame cost is dtaidistance's ``np.sum((x − y)**2)``: numpy's pairwise sum of the squared differences (below 8
values one after the other from −0.0, up to 128 values eight partial sums combined as ``((r0+r1)+(r2+r3)) +
((r4+r5)+(r6+r7))`` then the rest, above that the sums of two halves cut at a multiple of 8). The numba kernels
do exactly these operations; each is used only after it has given numpy's own bits on a block of the very inputs
of the run (per number of features), and numpy does the work otherwise — without numba, for small inputs, or if
a bit differs. numba is imported on first use (the evaluate layer loads without it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_FRAME_CHUNK = 1 << 22  # frame pairs × features per chunk of the numpy cost computation
_SMALL = 1 << 20  # below this many frame pairs × features, numpy (no compilation)
_KERNELS: dict[str, object] = {}
_TRUSTED: dict[tuple[str, int], bool] = {}


def frame_costs_numpy(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    out = np.empty((len(A), len(B)), dtype=np.float64)
    step = max(1, _FRAME_CHUNK // max(1, len(B) * A.shape[1]))
    for s in range(0, len(A), step):
        d = A[s:s + step, None, :] - B[None, :, :]
        np.square(d, out=d)
        out[s:s + step] = d.sum(axis=-1)
    return out


def _compile() -> dict | None:
    if "costs" in _KERNELS:
        return _KERNELS["costs"] and _KERNELS
    try:
        import numba
    except ImportError:
        _KERNELS["costs"] = None
        return None

    @numba.njit(cache=True)
    def pairwise(buf, start, n):
        if n < 8:
            res = -0.0
            for i in range(start, start + n):
                res += buf[i]
            return res
        if n <= 128:
            r0, r1, r2, r3 = buf[start], buf[start + 1], buf[start + 2], buf[start + 3]
            r4, r5, r6, r7 = buf[start + 4], buf[start + 5], buf[start + 6], buf[start + 7]
            i = 8
            stop = n - n % 8
            while i < stop:
                j = start + i
                r0 += buf[j]
                r1 += buf[j + 1]
                r2 += buf[j + 2]
                r3 += buf[j + 3]
                r4 += buf[j + 4]
                r5 += buf[j + 5]
                r6 += buf[j + 6]
                r7 += buf[j + 7]
                i += 8
            res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
            while i < n:
                res += buf[start + i]
                i += 1
            return res
        n2 = n // 2
        n2 -= n2 % 8
        return pairwise(buf, start, n2) + pairwise(buf, start + n2, n - n2)

    @numba.njit(cache=True)
    def cost(a, b, buf):
        for k in range(a.shape[0]):
            x = a[k] - b[k]
            buf[k] = x * x
        return pairwise(buf, 0, a.shape[0])

    @numba.njit(cache=True, parallel=True)
    def costs(A, B, out):
        for a in numba.prange(A.shape[0]):
            buf = np.empty(A.shape[1])
            for b in range(B.shape[0]):
                out[a, b] = cost(A[a], B[b], buf)

    @numba.njit(cache=True, parallel=True)
    def distances(cand, cand_off, cand_len, seqs, seq_off, seq_len, out):
        """``sqrt(acc[r, c])`` of every (candidate, sequence) pair: the recurrence with costs made on the fly."""
        n_seq = seq_len.shape[0]
        width = seq_len.max() + 1
        for j in numba.prange(n_seq):
            buf = np.empty(cand.shape[1])
            prev = np.empty(width)
            row = np.empty(width)
            c = seq_len[j]
            for p in range(cand_len.shape[0]):
                r = cand_len[p]
                prev[0] = 0.0
                for q in range(1, c + 1):
                    prev[q] = np.inf
                for i in range(r):
                    row[0] = np.inf
                    a = cand[cand_off[p] + i]
                    for q in range(c):
                        best = prev[q]
                        if prev[q + 1] < best:
                            best = prev[q + 1]
                        if row[q] < best:
                            best = row[q]
                        row[q + 1] = cost(a, seqs[seq_off[j] + q], buf) + best
                    prev, row = row, prev
                out[p, j] = np.sqrt(prev[c])

    _KERNELS.update(costs=costs, distances=distances)
    return _KERNELS


def _trusted(name: str, dim: int, fast, slow) -> bool | None:
    """Whether kernel *name* may serve inputs with *dim* features: decided once, by comparing ``fast()`` with
    ``slow()`` (numpy) bit for bit."""
    key = (name, dim)
    if key not in _TRUSTED:
        _TRUSTED[key] = bool(np.array_equal(fast(), slow()))
    return _TRUSTED[key]


def frame_costs(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``cost[a, b] = np.sum((A[a] − B[b])**2)`` for every pair of frames, in float64 (numpy's bits)."""
    A = np.ascontiguousarray(A, dtype=np.float64)
    B = np.ascontiguousarray(B, dtype=np.float64)
    dim = A.shape[1]
    kernels = _compile() if len(A) * len(B) * dim >= _SMALL and _TRUSTED.get(("costs", dim)) is not False else None
    if kernels is None:
        return frame_costs_numpy(A, B)

    def fast(a=A, b=B):
        out = np.empty((len(a), len(b)))
        kernels["costs"](a, b, out)
        return out

    if not _trusted("costs", dim, lambda: fast(A[:64], B[:64]), lambda: frame_costs_numpy(A[:64], B[:64])):
        return frame_costs_numpy(A, B)
    return fast()


def dtw_distances(cand_frames: np.ndarray, cand_off: np.ndarray, cand_len: np.ndarray,
                  sequences: Sequence[np.ndarray], lengths: np.ndarray, probe=None) -> np.ndarray | None:
    """``dtw_ndim.distance(candidate, sequence)`` for every pair (no window, psi or penalty) through numba, or None
    (no numba, a small problem, or a kernel that did not give the batched recurrence's bits on a probe).
    *probe*: ``(candidates, sequences) -> distances`` of the reference implementation, for the check."""
    dim = cand_frames.shape[1]
    cells = int(cand_len.sum()) * int(lengths.sum()) * dim
    if cells < _SMALL or _TRUSTED.get(("distances", dim)) is False or probe is None:
        return None
    kernels = _compile()
    if kernels is None:
        return None
    cand = np.ascontiguousarray(cand_frames, dtype=np.float64)
    seqs = np.ascontiguousarray(np.concatenate(sequences), dtype=np.float64)
    seq_off = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    def fast(n_cand, n_seq):
        out = np.empty((n_cand, n_seq))
        kernels["distances"](cand, cand_off[:n_cand].astype(np.int64), cand_len[:n_cand].astype(np.int64), seqs,
                             seq_off[:n_seq], lengths[:n_seq].astype(np.int64), out)
        return out

    few = min(8, len(lengths))
    if not _trusted("distances", dim, lambda: fast(min(2, len(cand_len)), few), lambda: probe(2, few)):
        return None
    return fast(len(cand_len), len(lengths))
