"""numba kernels of :mod:`.kernels` (imported only when numba is installed and an input is large): numpy's
pairwise sum of squared differences, frame costs, and whole DTW distances with the costs made on the fly.

numpy's pairwise sum splits a long vector into halves (cut at a multiple of 8) down to blocks of at most 128
values; the split is fixed by the length alone, so :func:`sum_plan` lays it out once (blocks, then the
additions in numpy's order) and the kernels follow that plan without recursion (numba cannot cache recursive
functions reliably)."""

import numba
import numpy as np

LEAF, ADD = 0, 1


def sum_plan(n: int, start: int = 0) -> list[tuple[int, int, int]]:
    """numpy's pairwise summation of *n* values as a postfix program: ``(LEAF, start, count)`` pushes the sum of
    a block, ``(ADD, 0, 0)`` replaces the last two sums by their sum (left + right)."""
    if n <= 128:
        return [(LEAF, start, n)]
    half = n // 2
    half -= half % 8
    return [*sum_plan(half, start), *sum_plan(n - half, start + half), (ADD, 0, 0)]


@numba.njit(cache=True)
def block_sum(buf, start, n):
    if n < 8:
        res = -0.0
        for i in range(start, start + n):
            res += buf[i]
        return res
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


@numba.njit(cache=True)
def cost(a, b, buf, plan, stack):
    """``np.sum((a − b)**2)``: squares into *buf*, then the pairwise sum along *plan*."""
    for k in range(a.shape[0]):
        x = a[k] - b[k]
        buf[k] = x * x
    top = 0
    for p in range(plan.shape[0]):
        if plan[p, 0] == 0:
            stack[top] = block_sum(buf, plan[p, 1], plan[p, 2])
            top += 1
        else:
            top -= 1
            stack[top - 1] = stack[top - 1] + stack[top]
    return stack[0]


@numba.njit(cache=True, parallel=True)
def costs(A, B, plan, out):
    for a in numba.prange(A.shape[0]):
        buf = np.empty(A.shape[1])
        stack = np.empty(plan.shape[0])
        for b in range(B.shape[0]):
            out[a, b] = cost(A[a], B[b], buf, plan, stack)


@numba.njit(cache=True, parallel=True)
def distances(cand, cand_off, cand_len, seqs, seq_off, seq_len, plan, out):
    """``sqrt(acc[r, c])`` of every (candidate, sequence) pair: dtaidistance's recurrence (no window, psi or
    penalty) with the costs made on the fly."""
    width = seq_len.max() + 1
    for j in numba.prange(seq_len.shape[0]):
        buf = np.empty(cand.shape[1])
        stack = np.empty(plan.shape[0])
        prev = np.empty(width)
        row = np.empty(width)
        c = seq_len[j]
        for p in range(cand_len.shape[0]):
            prev[0] = 0.0
            for q in range(1, c + 1):
                prev[q] = np.inf
            for i in range(cand_len[p]):
                row[0] = np.inf
                a = cand[cand_off[p] + i]
                for q in range(c):
                    best = prev[q]
                    if prev[q + 1] < best:
                        best = prev[q + 1]
                    if row[q] < best:
                        best = row[q]
                    row[q + 1] = cost(a, seqs[seq_off[j] + q], buf, plan, stack) + best
                prev, row = row, prev
            out[p, j] = np.sqrt(prev[c])
