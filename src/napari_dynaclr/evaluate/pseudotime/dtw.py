"""Dynamic time warping of many sequence pairs at once, with dtaidistance 2.4.0's numbers (its Python path, the
one VisCy calls with ``use_c=False``): VisCy's warping paths, medoid, subsequence and global alignments.

The frame costs (``np.sum((x − y)**2)`` of two frames, D multiply-adds each) are what DTW spends its time on at
768 features. Each function first takes them from one matrix product with rigorous bounds
(:class:`~napari_dynaclr.evaluate.sqdist.ProductDistances`) and runs dtaidistance's recurrence and walk on the
lower and upper bounds (:mod:`.recurrence`): where the bounds decide every choice — every pair but near-ties —
the path is dtaidistance's, and a cost that is returned is made exact by adding the exact costs of the path's
cells along it. The few pairs the bounds leave undecided are computed again from exact frame costs
(:func:`~.kernels.frame_costs`), so every path, choice and cost is dtaidistance's bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from napari_dynaclr.evaluate.pseudotime.kernels import dtw_distances, frame_costs, pair_costs
from napari_dynaclr.evaluate.pseudotime.recurrence import accumulate, best_paths, first_min, fold, gather_costs
from napari_dynaclr.evaluate.sqdist import ProductDistances

#: dtaidistance's subsequence alignment: ``penalty=0.1`` on the squared scale (``inner_val(0.1) = 0.1·0.1``)
SUBSEQUENCE_PENALTY = 0.1 * 0.1
_CELLS = 1 << 21  # matrix cells per batch of pairs (arrays below glibc's mmap threshold: no page faults)
_FRAMES = 1 << 15  # series frames per matrix product of the cost bounds


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


class Stack(Sequence):
    """Sequences of frames kept one after the other in one float64 array, so that the DTW functions use them
    without copying them (a list of arrays works too; it is stacked on each call)."""

    def __init__(self, frames: np.ndarray, lengths: Sequence[int]):
        self.frames = np.ascontiguousarray(frames, dtype=np.float64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = _offsets(self.lengths)

    @classmethod
    def of(cls, sequences: Sequence[np.ndarray]) -> Stack:
        if isinstance(sequences, Stack):
            return sequences
        dim = sequences[0].shape[1] if len(sequences) else 0
        frames = np.concatenate(sequences) if len(sequences) else np.zeros((0, dim))
        return cls(frames, [len(s) for s in sequences])

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self.frames[self.offsets[k]:self.offsets[k] + self.lengths[k]]


def cost_bounds(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` with ``lo <= np.sum((A[a] − B[b])**2) <= hi`` for every pair of frames (one matrix product
    per block of *B*'s rows)."""
    lo = np.empty((len(A), len(B)))
    hi = np.empty((len(A), len(B)))
    for s in range(0, len(B), _FRAMES):
        block = ProductDistances(A, B[s:s + _FRAMES], center=False)
        lo[:, s:s + _FRAMES], hi[:, s:s + _FRAMES] = block.bounds()
    return lo, hi


class _Pairs:
    """A query against many series, in batches of series whose padded matrices hold about :data:`_CELLS` cells,
    with the costs of every pair of frames of a batch: exact, or bounds ``(lo, hi)``."""

    def __init__(self, query: np.ndarray, series: Sequence[np.ndarray], bounded: bool):
        self.query = np.asarray(query, dtype=np.float64)
        stack = Stack.of(series)
        self.lengths, self.offsets, self.frames = stack.lengths, stack.offsets, stack.frames
        self.bounded = bounded

    def batches(self):
        n, r = len(self.lengths), len(self.query)
        step = max(1, _CELLS // (int((r + 1) * (self.lengths.max() + 1)) if n else 1))
        for s in range(0, n, step):
            yield np.arange(s, min(n, s + step))

    def costs(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The padded cost matrices of the batch *idx* (consecutive series): lower bounds (or exact costs) and
        upper bounds (or None)."""
        first = self.offsets[idx[0]]
        frames = self.frames[first:self.offsets[idx[-1]] + self.lengths[idx[-1]]]
        if self.bounded:
            lo, hi = cost_bounds(self.query, frames)
        else:
            lo, hi = frame_costs(self.query, frames), None
        rows = (np.zeros(len(idx), np.int64), np.full(len(idx), len(self.query)))
        cols = (self.offsets[idx] - first, self.lengths[idx])
        return gather_costs(lo, rows, cols), None if hi is None else gather_costs(hi, rows, cols)

    def cell_costs(self, idx: np.ndarray) -> Callable:
        """``(pairs, rows, cols) -> exact costs`` of cells of the batch *idx* (pairs index into it)."""
        return lambda pairs, rows, cols: pair_costs(self.query, self.frames, rows, self.offsets[idx[pairs]] + cols)


def _solve(solve: Callable, query: np.ndarray, series: Sequence[np.ndarray], *per_series) -> list:
    """``solve(pairs, *per_series) -> (results, sure)`` on cost bounds, then on exact costs for the series whose
    results the bounds left undecided."""
    out, sure = solve(_Pairs(query, series, bounded=True), *per_series)
    redo = np.flatnonzero(~sure)
    if len(redo):
        again, _ = solve(_Pairs(query, [series[k] for k in redo], bounded=False),
                         *(np.asarray(a)[redo] for a in per_series))
        for k, result in zip(redo, again):
            out[k] = result
    return out


def warping_paths_batch(query: np.ndarray, series: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``dtw.best_path(dtw_ndim.warping_paths(query, s)[1])`` for every *s* (no window, psi or penalty): the
    path from the last cells of both sequences, as ``(query_idx, series_idx)`` rows."""
    if not len(series):
        return []
    return _solve(_warping_paths, query, series)


def _warping_paths(pairs: _Pairs) -> tuple[list, np.ndarray]:
    out, sure = [], []
    for idx in pairs.batches():
        lo, hi = pairs.costs(idx)
        upper = None if hi is None else np.sqrt(accumulate(hi))
        walk = best_paths(np.sqrt(accumulate(lo)), np.full(len(idx), len(pairs.query)), pairs.lengths[idx],
                          upper=upper)
        out.extend(walk.paths)
        sure.append(walk.sure)
    return out, np.concatenate(sure)


def distance_sums(candidates: Sequence[int], sequences: Sequence[np.ndarray]) -> np.ndarray:
    """For each candidate ``i``, ``Σ_{j ≠ i} dtw_ndim.distance(seq_i, seq_j)`` added in order of ``j`` (VisCy's
    medoid costs; no window, psi or penalty), from exact frame costs."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    cand = np.asarray(candidates, dtype=np.int64)
    cand_frames = np.concatenate([sequences[i] for i in cand])
    cand_len = lengths[cand]
    cand_off = _offsets(cand_len)

    def probe(n_cand: int, n_seq: int) -> np.ndarray:
        frames = cand_frames[:int(cand_len[:n_cand].sum())]
        return _distances(frames, cand_off[:n_cand], cand_len[:n_cand], sequences[:n_seq], lengths[:n_seq])[0]

    dist = dtw_distances(cand_frames, cand_off, cand_len, sequences, lengths, probe)
    if dist is None:
        dist = _distances(cand_frames, cand_off, cand_len, sequences, lengths)[0]
    return _sums(dist, cand)


def _sums(dist: np.ndarray, cand: np.ndarray) -> np.ndarray:
    dist[np.arange(len(cand)), cand] = 0.0  # i == j is skipped; adding 0.0 leaves a sum unchanged
    return np.cumsum(dist, axis=1)[:, -1] if dist.shape[1] else np.zeros(len(cand))


def medoid(candidates: Sequence[int], sequences: Sequence[np.ndarray]) -> int:
    """The position in *candidates* of VisCy's medoid: the first least :func:`distance_sums`. The sums are
    bounded from cost bounds (rounded additions are monotone); only the candidates whose lower bound does not
    exceed the least upper bound can be the first least, and only those are summed exactly when there are
    several."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    cand = np.asarray(candidates, dtype=np.int64)
    cand_frames = np.concatenate([sequences[i] for i in cand])
    cand_len = lengths[cand]
    low, high = _distances(cand_frames, _offsets(cand_len), cand_len, sequences, lengths, cost_bounds)
    low, high = _sums(low, cand), _sums(high, cand)
    alive = np.flatnonzero(low <= high.min())
    if len(alive) == 1:
        return int(alive[0])
    return int(alive[np.argmin(distance_sums(cand[alive], sequences))])


def _distances(cand_frames, cand_off, cand_len, sequences, lengths, costs=lambda A, B: (frame_costs(A, B),)
               ) -> list[np.ndarray]:
    """``sqrt(acc[r, c])`` of every (candidate, sequence) pair through the batched recurrence, once per cost
    matrix ``costs(candidate frames, sequence frames)`` gives (exact costs, or lower and upper bounds)."""
    n_cand = len(cand_len)
    dists = []
    cand = np.arange(n_cand)
    block = max(1, _CELLS // max(1, n_cand * int((cand_len.max() + 1) * (lengths.max() + 1))))
    for s in range(0, len(sequences), block):
        js = np.arange(s, min(len(sequences), s + block))
        matrices = costs(cand_frames, np.concatenate([sequences[j] for j in js]))
        local = _offsets(lengths[js])
        pc, pj = np.repeat(cand, len(js)), np.tile(np.arange(len(js)), n_cand)
        for m, F in enumerate(matrices):
            if len(dists) <= m:
                dists.append(np.zeros((n_cand, len(sequences))))
            acc = accumulate(gather_costs(F, (cand_off[pc], cand_len[pc]), (local[pj], lengths[js][pj])))
            dists[m][pc, js[pj]] = np.sqrt(acc[cand_len[pc], lengths[js][pj], np.arange(len(pc))])
    return dists or [np.zeros((n_cand, len(sequences)))] * 2


def subsequence_match(template: np.ndarray, tracks: Sequence[np.ndarray], minlength: int = 2
                      ) -> list[tuple[np.ndarray, float] | None]:
    """dtaidistance's ``SubsequenceAlignment(template, track, use_ndim=True)`` then ``best_match()`` for every
    track: ``(path of (template_idx, track_idx), value = sqrt(acc)/len(template))``, or None when no segment of at
    least *minlength* frames matches (dtaidistance raises there)."""
    if not len(tracks):
        return []
    return _solve(lambda pairs: _subsequence(pairs, minlength), template, tracks)


def _subsequence(pairs: _Pairs, minlength: int) -> tuple[list, np.ndarray]:
    T = len(pairs.query)
    out, sure_all = [], []
    for idx in pairs.batches():
        lo, hi = pairs.costs(idx)
        acc = accumulate(lo, penalty=SUBSEQUENCE_PENALTY, free_start_columns=True)
        acc_hi = None if hi is None else accumulate(hi, penalty=SUBSEQUENCE_PENALTY, free_start_columns=True)
        valid = np.arange(lo.shape[1])[:, None] < pairs.lengths[idx][None, :]
        n = len(idx)
        # best_match: the first least of sqrt(acc[T, j])/T over the columns; a column whose path is shorter than
        # minlength is set to maxv = ceil(max + 1) and the search repeated; none left (inf or maxv): no match
        masked = np.where(valid, np.sqrt(acc[T, 1:, :]) / T, np.inf)  # (columns, pairs)
        maxv = np.ceil(np.max(np.where(valid, masked, -np.inf), axis=0) + 1)
        sure = np.ones(n, dtype=bool)
        if acc_hi is None:
            masked_hi = masked
        else:
            masked_hi = np.where(valid, np.sqrt(acc_hi[T, 1:, :]) / T, np.inf)
            sure &= maxv == np.ceil(np.max(np.where(valid, masked_hi, -np.inf), axis=0) + 1)
        result: list = [None] * n
        pending = np.flatnonzero(sure)
        while len(pending):
            best, decided = first_min(masked[:, pending], None if acc_hi is None else masked_hi[:, pending])
            low, high = masked[best, pending], masked_hi[best, pending]
            none = (low == high) & (np.isinf(low) | (low == maxv[pending]))
            some = high < maxv[pending]
            sure[pending[~(decided & (none | some))]] = False
            keep = decided & some
            pending, best = pending[keep], best[keep]
            if not len(pending):
                break
            walk = best_paths(acc[:, :, pending], np.full(len(pending), T), best + 1, SUBSEQUENCE_PENALTY,
                              None if acc_hi is None else acc_hi[:, :, pending])
            sure[pending[~walk.sure]] = False
            short = np.array([len(path) == 0 or b - path[0][1] + 1 < minlength for path, b in
                              zip(walk.paths, best)]) & walk.sure
            masked[best[short], pending[short]] = maxv[pending[short]]
            if acc_hi is not None:
                masked_hi[best[short], pending[short]] = maxv[pending[short]]
            done = np.flatnonzero(walk.sure & ~short)
            if acc_hi is None:
                values = masked[best[done], pending[done]]
            else:  # the exact acc[T, best + 1] added along the path, from the row-0 cell it left (0)
                start = acc[walk.stop_row, walk.stop_col, pending]
                values = np.sqrt(fold(walk, done, start, pairs.cell_costs(idx[pending]), SUBSEQUENCE_PENALTY)) / T
            for k, v in zip(done, values):
                result[pending[k]] = (walk.paths[k], float(v))
            pending = pending[short]
        out.extend(result)
        sure_all.append(sure)
    return out, np.concatenate(sure_all)


def global_match(template: np.ndarray, tracks: Sequence[np.ndarray], psis: Sequence[int]
                 ) -> list[tuple[np.ndarray, float]]:
    """VisCy's global mode: ``dtw_ndim.warping_paths(template, track, psi=psi)`` (square roots, psi end cells
    marked −1), ``dtw.best_path`` from the last cell, and the cost read at ``paths[i_end, j_end]`` — the padded
    cell one diagonal step before the path's end, as VisCy reads it."""
    if not len(tracks):
        return []
    return _solve(_global, template, tracks, np.asarray(psis, dtype=np.int64))


def _mark_psi_ends(paths: np.ndarray, upper: np.ndarray | None, psis: np.ndarray, lengths: np.ndarray
                   ) -> np.ndarray:
    """dtaidistance's psi end relaxation: per pair, the end cells of the last row or column (whichever holds the
    least value) up to the least one are marked −1. Returns whether the bounds decided it (always without)."""
    T = paths.shape[0] - 1
    sure = np.ones(len(psis), dtype=bool)
    for p, (c, psi) in enumerate(zip(lengths, psis)):
        if psi == 0:
            continue
        rows = np.arange(T, max(0, T - psi - 1), -1)
        cols = np.arange(c, max(0, c - psi - 1), -1)
        vr, vc = paths[rows, c, p], paths[T, cols, p]
        hr, hc = (vr, vc) if upper is None else (upper[rows, c, p], upper[T, cols, p])
        mir, ok_r = first_min(vr, None if upper is None else hr)
        mic, ok_c = first_min(vc, None if upper is None else hc)
        if not (ok_r and ok_c) or not (hr[mir] < vc[mic] or vr[mir] >= hc[mic]):
            sure[p] = False
            continue
        for m in (paths, upper) if upper is not None else (paths,):
            if vr[mir] < vc[mic]:
                m[rows[:mir], c, p] = -1
            else:
                m[T, cols[:mic], p] = -1
    return sure


def _global(pairs: _Pairs, psis: np.ndarray) -> tuple[list, np.ndarray]:
    T = len(pairs.query)
    out, sure_all = [], []
    for idx in pairs.batches():
        lo, hi = pairs.costs(idx)
        acc = accumulate(lo, psi=psis[idx])
        acc_hi = None if hi is None else accumulate(hi, psi=psis[idx])
        paths, upper = np.sqrt(acc), None if acc_hi is None else np.sqrt(acc_hi)
        sure = _mark_psi_ends(paths, upper, psis[idx], pairs.lengths[idx])
        walk = best_paths(paths, np.full(len(idx), T), pairs.lengths[idx], upper=upper)
        sure &= walk.sure
        # the cost is read at the padded cell (i, j) = path[-1]; with bounds its exact value comes from its own
        # walk in the squared (recurrence) scale, its cells' exact costs added along it
        ends = np.array([path[-1] if s else (0, 0) for path, s in zip(walk.paths, sure)]).reshape(-1, 2)
        values = paths[ends[:, 0], ends[:, 1], np.arange(len(idx))]
        inner = np.flatnonzero(sure & (ends[:, 0] > 0) & (ends[:, 1] > 0))
        if acc_hi is not None and len(inner):
            back = best_paths(acc[:, :, inner], ends[inner, 0], ends[inner, 1], upper=acc_hi[:, :, inner])
            sure[inner[~back.sure]] = False
            done = np.flatnonzero(back.sure)
            start = acc[back.stop_row, back.stop_col, inner]
            values[inner[done]] = np.sqrt(fold(back, done, start, pairs.cell_costs(idx[inner])))
        out.extend((path, float(v)) for path, v in zip(walk.paths, values))
        sure_all.append(sure)
    return out, np.concatenate(sure_all)
