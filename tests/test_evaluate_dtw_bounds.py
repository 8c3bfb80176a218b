"""The DTW from bounded frame costs (one matrix product, exact costs only where the bounds leave a choice open):
the bounds hold, the medoid and the alignments equal dtaidistance's loops, and exact frame costs are computed only
for undecided pairs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from napari_dynaclr.evaluate.pseudotime import dtw as D
from napari_dynaclr.evaluate.pseudotime.recurrence import first_min
from napari_dynaclr.evaluate.sqdist import ProductDistances
from test_evaluate_pseudotime import assert_alignments_equal_loops


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 800), st.floats(-3, 3), st.floats(-4, 4), st.booleans())
def test_product_bounds_hold(seed, dim, log_scale, offset, center):
    """lo <= numpy's np.sum((a − b)**2) (and cdist's value for float32 rows) <= hi, rows far from the origin too."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((7, dim)) * 10.0**log_scale + offset
    B = rng.standard_normal((9, dim)) * 10.0**log_scale + offset
    B[0] = A[0]  # a zero distance
    lo, hi = ProductDistances(A, B, center=center).bounds()
    exact = np.array([[np.sum((a - b) ** 2) for b in B] for a in A])
    assert np.all(lo <= exact) and np.all(exact <= hi) and np.all(lo >= 0)
    pool = np.concatenate([A, B]).astype(np.float32)
    lo, hi = ProductDistances(pool).bounds()
    exact = cdist(pool, pool, "sqeuclidean")
    assert np.all(lo <= exact) and np.all(exact <= hi)


def test_first_min_decides_only_what_the_bounds_decide():
    lower = np.array([[1.0, 1.0, 2.0, 0.5], [0.9, 1.0, 1.0, 0.6], [3.0, 1.0, 5.0, 0.7]])
    upper = lower + np.array([[0.0, 0.0, 0.0, 0.0], [0.05, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    k, decided = first_min(lower, upper)
    # column 0: 0.9..0.95 beats 1.0; column 1: an exact tie, the first wins; column 2: 1.0 against 2.0, 5.0;
    # column 3: 0.5 exact against 0.6, 0.7
    assert k.tolist() == [1, 0, 1, 0] and decided.tolist() == [True, True, True, True]
    upper[1, 0] = 1.0  # 0.9..1.0 against an exact 1.0 that comes first: a tie would pick row 0
    upper[0, 3] = 0.6  # 0.5..0.6 against 0.6 that comes later: row 0 wins a tie too
    k, decided = first_min(lower, upper)
    assert decided.tolist() == [False, True, True, True] and k[3] == 0


def _tracks(seed, n=30, dim=16):
    rng = np.random.default_rng(seed)
    tracks = [rng.standard_normal((int(k), dim)) for k in rng.integers(3, 16, size=n)]
    return [t / np.linalg.norm(t, axis=1, keepdims=True) for t in tracks]  # L2 rows, as the pipeline's


def test_no_exact_frame_costs_without_near_ties(monkeypatch):
    """On continuous data every decision is taken from the bounds: the exact all-pairs frame costs are never
    computed (the old code computed them for every pair), and every result is still dtaidistance's."""
    template, *tracks = _tracks(3)
    distance_sums = D.distance_sums
    monkeypatch.setattr(D, "frame_costs", lambda *a: pytest.fail("exact frame costs computed"))
    monkeypatch.setattr(D, "distance_sums", lambda *a: pytest.fail("exact medoid sums computed"))
    assert_alignments_equal_loops(template, tracks)
    candidates = [0, 4, 9, 17, 25]
    position = D.medoid(candidates, tracks)
    monkeypatch.undo()
    assert position == int(np.argmin(distance_sums(candidates, tracks)))


def test_medoid_ties_are_decided_exactly(monkeypatch):
    """Duplicated tracks tie exactly: the bounds cannot order them, the exact sums of the tied candidates can
    (the first least wins, as np.argmin in VisCy)."""
    tracks = _tracks(5, n=12)
    tracks[7] = tracks[2].copy()
    tracks[9] = tracks[2].copy()
    exact_calls = []
    distance_sums = D.distance_sums
    monkeypatch.setattr(D, "distance_sums", lambda c, s: exact_calls.append(list(c)) or distance_sums(c, s))
    sums = distance_sums(list(range(12)), tracks)
    assert D.medoid(list(range(12)), tracks) == int(np.argmin(sums))
    for candidates in ([9, 7, 2], [7, 9, 1, 2]):
        assert D.medoid(candidates, tracks) == int(np.argmin(distance_sums(candidates, tracks)))
    assert exact_calls and all(len(c) < 5 for c in exact_calls)  # only the tied candidates, summed exactly
