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


def pair_costs(A: np.ndarray, B: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """``np.sum((A[ia[k]] − B[ib[k]])**2)`` for every k (numpy's bits: each row summed along its features)."""
    out = np.empty(len(ia), dtype=np.float64)
    step = max(1, _FRAME_CHUNK // max(1, A.shape[1]))
    for s in range(0, len(ia), step):
        d = np.asarray(A[ia[s:s + step]], dtype=np.float64) - np.asarray(B[ib[s:s + step]], dtype=np.float64)
        np.square(d, out=d)
        out[s:s + step] = d.sum(axis=-1)
    return out


def _compile() -> dict | None:
    """The numba kernels (:mod:`._numba_kernels`, compiled once and cached on disk), or None without numba."""
    if "costs" not in _KERNELS:
        try:
            from napari_dynaclr.evaluate.pseudotime import _numba_kernels as nk
        except Exception:  # noqa: BLE001 - no numba, or it cannot compile/cache here: numpy does the work
            _KERNELS["costs"] = None
        else:
            _KERNELS.update(costs=nk.costs, distances=nk.distances, plan=nk.sum_plan)
    return _KERNELS if _KERNELS["costs"] is not None else None


def _plan(kernels: dict, dim: int) -> np.ndarray:
    return np.array(kernels["plan"](dim), dtype=np.int64).reshape(-1, 3)


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

    plan = _plan(kernels, dim)

    def fast(a=A, b=B):
        out = np.empty((len(a), len(b)))
        kernels["costs"](a, b, plan, out)
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
    plan = _plan(kernels, dim)

    def fast(n_cand, n_seq):
        out = np.empty((n_cand, n_seq))
        kernels["distances"](cand, cand_off[:n_cand].astype(np.int64), cand_len[:n_cand].astype(np.int64), seqs,
                             seq_off[:n_seq], lengths[:n_seq].astype(np.int64), plan, out)
        return out

    few = min(8, len(lengths))
    if not _trusted("distances", dim, lambda: fast(min(2, len(cand_len)), few), lambda: probe(2, few)):
        return None
    return fast(len(cand_len), len(lengths))
