"""Dynamic time warping of many sequence pairs at once, with dtaidistance 2.4.0's numbers (its Python path, the
one VisCy calls with ``use_c=False``).

dtaidistance's recurrence on the padded ``(r+1) × (c+1)`` matrix, cost = squared Euclidean distance of two
frames (``np.sum((x − y)**2)``)::

    acc[i+1, j+1] = cost[i, j] + min(acc[i, j], acc[i, j+1] + penalty, acc[i+1, j] + penalty)

``acc[0, 0..psi_b] = 0`` and ``acc[0..psi_b, 0] = 0`` (start relaxation), every other border cell ``inf``.
``warping_paths`` then takes the square root of the whole matrix (unless it keeps the internal squares, as the
subsequence alignment does), marks the cells psi end relaxation skips with −1, and ``best_path`` walks back from
a cell to row or column 0, choosing the first of (diagonal, up + penalty, left + penalty) with the least value
and keeping every visited cell not marked −1 (the last one kept is dropped).

Here all pairs of a batch advance together: the matrix is ``(r+1, c+1, pairs)`` and every step of the
recurrence and of the walk back is one numpy operation over the pairs, so the same float64 operations happen in
the same order as in dtaidistance's Python loops — the same costs and the same paths, ties included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_dynaclr.evaluate.pseudotime.kernels import dtw_distances, frame_costs

#: dtaidistance's subsequence alignment: ``penalty=0.1`` on the squared scale (``inner_val(0.1) = 0.1·0.1``)
SUBSEQUENCE_PENALTY = 0.1 * 0.1
_CELLS = 1 << 24  # matrix cells per batch of pairs


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def gather_costs(F: np.ndarray, rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray]
                 ) -> np.ndarray:
    """The padded cost matrices ``(r_max, c_max, pairs)`` of many pairs out of one frame-cost matrix *F*:
    pair ``k`` uses rows ``rows[0][k] : rows[0][k] + rows[1][k]`` and the columns likewise; padding is ``inf``."""
    r_off, r_len = rows
    c_off, c_len = cols
    rmax, cmax = int(r_len.max()), int(c_len.max())
    ri = r_off[None, :] + np.arange(rmax)[:, None]
    ci = c_off[None, :] + np.arange(cmax)[:, None]
    ri_ok = np.arange(rmax)[:, None] < r_len[None, :]
    ci_ok = np.arange(cmax)[:, None] < c_len[None, :]
    out = F[np.where(ri_ok, ri, 0)[:, None, :], np.where(ci_ok, ci, 0)[None, :, :]]
    out[~(ri_ok[:, None, :] & ci_ok[None, :, :])] = np.inf
    return out


def accumulate(cost: np.ndarray, penalty: float = 0.0, psi: np.ndarray | None = None,
               free_start_columns: bool = False) -> np.ndarray:
    """dtaidistance's accumulated cost (internal, squared scale) of a batch ``cost (r, c, pairs)``.

    *psi*: per pair, the start relaxation of both sequences (``acc[0, 0..psi] = acc[0..psi, 0] = 0``).
    *free_start_columns*: ``acc[0, :] = 0`` (the subsequence alignment: the match may start anywhere).
    """
    r, c, n = cost.shape
    acc = np.full((r + 1, c + 1, n), np.inf)
    acc[0, 0] = 0.0
    if free_start_columns:
        acc[0, :] = 0.0
    if psi is not None:
        psi = np.asarray(psi)
        acc[0, :] = np.where(np.arange(c + 1)[:, None] <= psi[None, :], 0.0, acc[0, :])
        acc[:, 0] = np.where(np.arange(r + 1)[:, None] <= psi[None, :], 0.0, acc[:, 0])
    best = np.empty(n)
    side = np.empty(n)
    for i in range(r):
        up_row, row = acc[i], acc[i + 1]
        for j in range(c):
            if penalty:
                np.add(up_row[j + 1], penalty, out=best)
                np.add(row[j], penalty, out=side)
                np.minimum(best, side, out=best)
                np.minimum(up_row[j], best, out=best)
            else:
                np.minimum(up_row[j], up_row[j + 1], out=best)
                np.minimum(best, row[j], out=best)
            np.add(cost[i, j], best, out=row[j + 1])
    return acc


def best_paths(paths: np.ndarray, end_row: np.ndarray, end_col: np.ndarray, penalty: float = 0.0
               ) -> list[np.ndarray]:
    """dtaidistance's ``best_path`` for every pair of *paths* ``(r+1, c+1, pairs)``, starting at the padded cell
    ``(end_row[k], end_col[k])``: one ``(K, 2)`` int array of ``(row, column)`` per pair, 0-based."""
    n = paths.shape[2]
    i = np.asarray(end_row, dtype=np.int64).copy()
    j = np.asarray(end_col, dtype=np.int64).copy()
    k = np.arange(n)
    steps_i, steps_j, kept = [i - 1], [j - 1], [paths[i, j, k] != -1]
    active = np.flatnonzero((i > 0) & (j > 0))
    while len(active):
        ia, ja = i[active], j[active]
        diag = paths[ia - 1, ja - 1, active]
        up = paths[ia - 1, ja, active]
        left = paths[ia, ja - 1, active]
        if penalty:
            up = up + penalty
            left = left + penalty
        move = np.argmin(np.stack([diag, up, left]), axis=0)
        ia = ia - (move != 2)
        ja = ja - (move != 1)
        i[active], j[active] = ia, ja
        si, sj, keep = np.full(n, -1), np.full(n, -1), np.zeros(n, dtype=bool)
        si[active], sj[active] = ia - 1, ja - 1
        keep[active] = paths[ia, ja, active] != -1
        steps_i.append(si)
        steps_j.append(sj)
        kept.append(keep)
        active = active[(ia > 0) & (ja > 0)]
    rows, cols, keep_all = np.stack(steps_i), np.stack(steps_j), np.stack(kept)
    out = []
    for p in range(n):
        sel = np.flatnonzero(keep_all[:, p])[:-1][::-1]  # dtaidistance pops the last cell kept, then reverses
        out.append(np.column_stack([rows[sel, p], cols[sel, p]]))
    return out


def _batches(lengths_r: np.ndarray, lengths_c: np.ndarray):
    """Index batches of pairs whose padded matrices hold about :data:`_CELLS` cells."""
    n = len(lengths_r)
    cells = int((lengths_r.max() + 1) * (lengths_c.max() + 1)) if n else 1
    step = max(1, _CELLS // cells)
    for s in range(0, n, step):
        yield np.arange(s, min(n, s + step))


def warping_paths_batch(query: np.ndarray, series: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``dtw.best_path(dtw_ndim.warping_paths(query, s)[1])`` for every *s* (no window, psi or penalty): the
    path from the last cells of both sequences, as ``(query_idx, series_idx)`` rows."""
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    F = frame_costs(query, np.concatenate(series)) if len(series) else np.zeros((len(query), 0))
    offsets = _offsets(lengths)
    out: list[np.ndarray] = []
    r = len(query)
    for idx in _batches(np.full(len(series), r), lengths):
        cost = gather_costs(F, (np.zeros(len(idx), np.int64), np.full(len(idx), r)), (offsets[idx], lengths[idx]))
        paths = np.sqrt(accumulate(cost))
        out.extend(best_paths(paths, np.full(len(idx), r), lengths[idx]))
    return out


def distance_sums(candidates: Sequence[int], sequences: Sequence[np.ndarray]) -> np.ndarray:
    """For each candidate ``i``, ``Σ_{j ≠ i} dtw_ndim.distance(seq_i, seq_j)`` added in order of ``j`` (VisCy's
    medoid costs; no window, psi or penalty)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    cand = np.asarray(candidates, dtype=np.int64)
    cand_frames = np.concatenate([sequences[i] for i in cand])
    cand_len = lengths[cand]
    cand_off = _offsets(cand_len)

    def probe(n_cand: int, n_seq: int) -> np.ndarray:
        frames = cand_frames[:int(cand_len[:n_cand].sum())]
        return _distances_numpy(frames, cand_off[:n_cand], cand_len[:n_cand], sequences[:n_seq], lengths[:n_seq])

    dist = dtw_distances(cand_frames, cand_off, cand_len, sequences, lengths, probe)
    if dist is None:
        dist = _distances_numpy(cand_frames, cand_off, cand_len, sequences, lengths)
    dist[np.arange(len(cand)), cand] = 0.0  # i == j is skipped; adding 0.0 leaves a sum unchanged
    return np.cumsum(dist, axis=1)[:, -1] if dist.shape[1] else np.zeros(len(cand))


def _distances_numpy(cand_frames, cand_off, cand_len, sequences, lengths) -> np.ndarray:
    """``sqrt(acc[r, c])`` of every (candidate, sequence) pair through the batched recurrence."""
    dist = np.zeros((len(cand_len), len(sequences)))
    cand = np.arange(len(cand_len))
    block = max(1, _CELLS // max(1, len(cand) * int((cand_len.max() + 1) * (lengths.max() + 1))))
    for s in range(0, len(sequences), block):
        js = np.arange(s, min(len(sequences), s + block))
        F = frame_costs(cand_frames, np.concatenate([sequences[j] for j in js]))
        local = _offsets(lengths[js])
        pc, pj = np.repeat(np.arange(len(cand)), len(js)), np.tile(np.arange(len(js)), len(cand))
        cost = gather_costs(F, (cand_off[pc], cand_len[pc]), (local[pj], lengths[js][pj]))
        acc = accumulate(cost)
        d = np.sqrt(acc[cand_len[pc], lengths[js][pj], np.arange(len(pc))])
        dist[pc, js[pj]] = d
    return dist


def subsequence_match(template: np.ndarray, tracks: Sequence[np.ndarray], minlength: int = 2
                      ) -> list[tuple[np.ndarray, float] | None]:
    """dtaidistance's ``SubsequenceAlignment(template, track, use_ndim=True)`` then ``best_match()`` for every
    track: ``(path of (template_idx, track_idx), value = sqrt(acc)/len(template))``, or None when no segment of at
    least *minlength* frames matches (dtaidistance raises there)."""
    T = len(template)
    lengths = np.array([len(t) for t in tracks], dtype=np.int64)
    F = frame_costs(template, np.concatenate(tracks))
    offsets = _offsets(lengths)
    out: list[tuple[np.ndarray, float] | None] = []
    for idx in _batches(np.full(len(tracks), T), lengths):
        cost = gather_costs(F, (np.zeros(len(idx), np.int64), np.full(len(idx), T)), (offsets[idx], lengths[idx]))
        acc = accumulate(cost, penalty=SUBSEQUENCE_PENALTY, free_start_columns=True)
        cmax = cost.shape[1]
        valid = np.arange(cmax)[:, None] < lengths[idx][None, :]
        matching = np.where(valid, np.sqrt(acc[T, 1:, :]) / T, np.inf)  # (cmax, pairs)
        masked = matching.copy()
        maxv = np.ceil(np.max(np.where(valid, matching, -np.inf), axis=0) + 1)
        result: dict[int, tuple[np.ndarray, float] | None] = {}
        pending = np.arange(len(idx))
        while len(pending):
            best = np.argmin(masked[:, pending], axis=0)
            value = masked[best, pending]
            none = np.isinf(value) | (value == maxv[pending])
            for p in pending[none]:
                result[int(p)] = None
            pending, best = pending[~none], best[~none]
            if not len(pending):
                break
            sub = acc[:, :, pending]
            paths = best_paths(sub, np.full(len(pending), T), best + 1, penalty=SUBSEQUENCE_PENALTY)
            retry = []
            for p, b, path in zip(pending, best, paths):
                if len(path) == 0 or b - path[0][1] + 1 < minlength:
                    masked[b, p] = maxv[p]
                    retry.append(p)
                else:
                    result[int(p)] = (path, float(matching[b, p]))
            pending = np.array(retry, dtype=np.int64)
        out.extend(result[p] for p in range(len(idx)))
    return out


def global_match(template: np.ndarray, tracks: Sequence[np.ndarray], psis: Sequence[int]
                 ) -> list[tuple[np.ndarray, float]]:
    """VisCy's global mode: ``dtw_ndim.warping_paths(template, track, psi=psi)`` (square roots, psi end cells
    marked −1), ``dtw.best_path`` from the last cell, and the cost read at ``paths[i_end, j_end]`` — the padded
    cell one diagonal step before the path's end, as VisCy reads it."""
    T = len(template)
    lengths = np.array([len(t) for t in tracks], dtype=np.int64)
    psis = np.asarray(psis, dtype=np.int64)
    F = frame_costs(template, np.concatenate(tracks))
    offsets = _offsets(lengths)
    out: list[tuple[np.ndarray, float]] = []
    for idx in _batches(np.full(len(tracks), T), lengths):
        cost = gather_costs(F, (np.zeros(len(idx), np.int64), np.full(len(idx), T)), (offsets[idx], lengths[idx]))
        paths = np.sqrt(accumulate(cost, psi=psis[idx]))
        for p, (c, psi) in enumerate(zip(lengths[idx], psis[idx])):
            if psi == 0:
                continue
            col = paths[:, c, p]
            rows = np.arange(T, max(0, T - psi - 1), -1)
            cols = np.arange(c, max(0, c - psi - 1), -1)
            vr, vc = col[rows], paths[T, cols, p]
            mir, mic = int(np.argmin(vr)), int(np.argmin(vc))
            if vr[mir] < vc[mic]:
                paths[rows[:mir], c, p] = -1
            else:
                paths[T, cols[:mic], p] = -1
        walked = best_paths(paths, np.full(len(idx), T), lengths[idx])
        for p, path in enumerate(walked):
            out.append((path, float(paths[path[-1, 0], path[-1, 1], p])))
    return out
