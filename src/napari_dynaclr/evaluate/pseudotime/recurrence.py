"""dtaidistance's DTW recurrence and walk back over many pairs at once, exactly or with bounds on the costs.

dtaidistance's recurrence on the padded ``(r+1) × (c+1)`` matrix, cost = squared Euclidean distance of two
frames (``np.sum((x − y)**2)``)::

    acc[i+1, j+1] = cost[i, j] + min(acc[i, j], acc[i, j+1] + penalty, acc[i+1, j] + penalty)

``acc[0, 0..psi_b] = 0`` and ``acc[0..psi_b, 0] = 0`` (start relaxation), every other border cell ``inf``.
``best_path`` walks back from a cell to row or column 0, choosing the first of (diagonal, up + penalty,
left + penalty) with the least value and keeping every visited cell not marked −1 (the last one kept is dropped).

All pairs of a batch advance together: the matrix is ``(r+1, c+1, pairs)`` and every step of the recurrence and
of the walk is one numpy operation over the pairs — the same float64 operations in the same order as
dtaidistance's Python loops.

**Bounds.** Rounded addition and ``min`` are monotone, so the recurrence run on lower bounds of the costs gives
lower bounds of every accumulated value, and on upper bounds upper bounds. A walk given both takes a step only
where the bounds decide dtaidistance's choice (:func:`first_min`); its path is then dtaidistance's, and the exact
accumulated value at its end is the exact costs of its cells added along it (:func:`fold`) — each step of the
recurrence adds the value of the predecessor the walk chose. Pairs with an undecided step are reported, for the
caller to compute again from exact costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


def gather_costs(F: np.ndarray, rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray]
                 ) -> np.ndarray:
    """The padded cost matrices ``(r_max, c_max, pairs)`` of many pairs out of one frame-cost matrix *F*:
    pair ``k`` uses rows ``rows[0][k] : rows[0][k] + rows[1][k]`` and the columns likewise; padding is ``inf``.
    Pairs sharing their rows (one query against many series) are gathered together, columns only."""
    r_off, r_len = np.asarray(rows[0]), np.asarray(rows[1])
    c_off, c_len = cols
    rmax, cmax, n = int(r_len.max()), int(c_len.max()), len(r_len)
    ci_ok = np.arange(cmax)[:, None] < c_len[None, :]
    ci = np.where(ci_ok, c_off[None, :] + np.arange(cmax)[:, None], 0)
    out = np.empty((rmax, cmax, n))
    groups, inverse = np.unique(np.stack([r_off, r_len]), axis=1, return_inverse=True)
    for g, (r0, rl) in enumerate(groups.T):
        block = F[r0:r0 + rl]
        if groups.shape[1] == 1:
            out[:rl] = block[:, ci]
            out[rl:] = np.inf
        else:
            sel = np.flatnonzero(inverse == g)
            if sel[-1] - sel[0] + 1 == len(sel):  # consecutive pairs (one candidate against many): a slice
                sel = slice(sel[0], sel[-1] + 1)
            out[:rl, :, sel] = block[:, ci[:, sel]]
            out[rl:, :, sel] = np.inf
    out[:, ~ci_ok] = np.inf
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


def first_min(lower: np.ndarray, upper: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``np.argmin(values, axis=0)`` (the first least) of values known only to lie in ``[lower, upper]``, and
    whether the bounds decide it: the pick beats every earlier entry strictly and every later one or ties it,
    whatever the values. Without *upper* the values are exact and every pick is decided."""
    k = np.argmin(lower, axis=0)
    if upper is None:
        return k, np.ones(np.shape(k), dtype=bool)
    top = np.take_along_axis(upper, np.expand_dims(k, 0), axis=0)[0]
    order = np.arange(len(lower)).reshape(-1, *([1] * (lower.ndim - 1)))
    ok = np.where(order < k, top < lower, np.where(order > k, top <= lower, True))
    return k, ok.all(axis=0)


class Walk(NamedTuple):
    """:func:`best_paths`' answer: per pair the path (``(K, 2)`` 0-based ``(row, column)``), whether every step
    was decided (without bounds always), and the padded border cell the walk stopped on."""

    paths: list[np.ndarray]
    sure: np.ndarray
    stop_row: np.ndarray
    stop_col: np.ndarray


def best_paths(paths: np.ndarray, end_row: np.ndarray, end_col: np.ndarray, penalty: float = 0.0,
               upper: np.ndarray | None = None) -> Walk:
    """dtaidistance's ``best_path`` for every pair of *paths* ``(r+1, c+1, pairs)``, from the padded cell
    ``(end_row[k], end_col[k])``. With *upper* (the same matrices from upper bounds of the costs, *paths* then
    from lower bounds, −1 marks in both) a pair stops at its first undecided step, with ``sure`` False."""
    n = paths.shape[2]
    i = np.asarray(end_row, dtype=np.int64).copy()
    j = np.asarray(end_col, dtype=np.int64).copy()
    k = np.arange(n)
    sure = np.ones(n, dtype=bool)
    steps_i, steps_j, kept = [i - 1], [j - 1], [paths[i, j, k] != -1]
    active = np.flatnonzero((i > 0) & (j > 0))
    while len(active):
        ia, ja = i[active], j[active]
        cand = [(ia - 1, ja - 1), (ia - 1, ja), (ia, ja - 1)]
        lower = np.stack([paths[a, b, active] for a, b in cand])
        high = None if upper is None else np.stack([upper[a, b, active] for a, b in cand])
        if penalty:
            lower[1:] += penalty
            if high is not None:
                high[1:] += penalty
        move, decided = first_min(lower, high)
        if not decided.all():
            sure[active[~decided]] = False
            active, move, ia, ja = active[decided], move[decided], ia[decided], ja[decided]
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
        out.append(np.column_stack([rows[sel, p], cols[sel, p]]) if sure[p] else np.zeros((0, 2), np.int64))
    return Walk(out, sure, i, j)


def fold(walk: Walk, which: np.ndarray, start: np.ndarray, cell_costs: Callable, penalty: float = 0.0
         ) -> np.ndarray:
    """The exact accumulated value at the last cell of the sure, non-empty paths ``walk.paths[k]``, k in *which*:
    from the value *start[k]* of the border cell the walk stopped on (a constant of the matrix), each cell adds
    its exact cost to its predecessor's value (plus *penalty* after a step that is not diagonal), as the
    recurrence does. ``cell_costs(pairs, rows, cols)`` gives the exact costs of cells of pairs."""
    which = np.asarray(which, dtype=np.int64)
    if not len(which):
        return np.zeros(0)
    paths = [walk.paths[k] for k in which]
    lens = np.array([len(p) for p in paths])
    cells = np.concatenate(paths)
    K = int(lens.max())
    inside = np.arange(K)[None, :] < lens[:, None]
    cost = np.zeros((len(which), K))
    cost[inside] = cell_costs(np.repeat(which, lens), cells[:, 0], cells[:, 1])
    rows = np.zeros((len(which), K + 1), dtype=np.int64)
    cols = np.zeros((len(which), K + 1), dtype=np.int64)
    rows[:, 0], cols[:, 0] = walk.stop_row[which] - 1, walk.stop_col[which] - 1
    rows[:, 1:][inside], cols[:, 1:][inside] = cells[:, 0], cells[:, 1]
    diagonal = (np.diff(rows, axis=1) == 1) & (np.diff(cols, axis=1) == 1)
    acc = np.asarray(start, dtype=np.float64)[which].copy()
    for s in range(K):
        best = np.where(diagonal[:, s], acc, acc + penalty) if penalty else acc
        acc = np.where(inside[:, s], cost[:, s] + best, acc)
    return acc
